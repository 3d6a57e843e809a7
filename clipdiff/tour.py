"""The guided tour: the lesson's questions as one-click experiments, kept as data.

An Experiment says what it shows (a title and a short explanation written for this project's models) and
carries one or more Runs. Every figure an explanation states about the shipped models is a placeholder filled from
their measured claims (clipdiff/claims.py, checkpoints/claims.json), so the text follows the models. A Run is
what one button does: optionally a Generate step first (its images and its recorded steps feed what follows), then
one tab's settings. The app (clipdiff/app/tabs/tour.py) puts a Run's
settings into the tabs' controls, switches to the Run's tab and runs that tab's own handler, so the attendee lands
on a result they can keep playing with. Nothing here runs a model, so the tour can be read and checked without one.

Every Run is sized to take a few seconds on a laptop CPU with the shipped models: DPM-Solver++ at 10-20 steps
and a handful of images.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import claims
from .pipeline import REFERENCE_PROMPTS, REFERENCE_WS
from .sampling import Sampling
from .schedulers import sampler_spec

# A single-run image at the app's defaults (Sampling()) takes under a second.
SWEEP = Sampling(steps=10)         # a 21-cell sweep is a 42-image U-Net batch per step
PLAYBACK_STEPS = claims.PLAYBACK_STEPS  # more recorded steps to scrub through (the measured playback claims use it)

DAISY, SUNFLOWER, ROSE = REFERENCE_PROMPTS
LONG_PROMPT = (
    "this flower has many long thin white petals arranged in a flat ring around a large bright yellow center "
    "made of tiny tightly packed florets, the petals are slightly curled at their tips and some of them overlap, "
    "the stem is long and green with narrow leaves, and behind the flower there is a soft green blurred "
    "background of grass with a few other daisies that are out of focus and a little bit of blue sky at the top"
)
CAPTION_STYLE = "this flower has large dark red petals that are layered and velvety around a hidden center"
ROSE_PLAIN = "A rose"
OUT_OF_DISTRIBUTION = claims.OUT_OF_DISTRIBUTION
OOD_READINGS = tuple(text for _, colour, thing in claims.OOD_READINGS for text in (colour, thing))
WORDY_CAPTION = claims.WORDY_CAPTION


# -- what a button puts into each tab ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Generate:
    """The Generate tab: image k of each prompt uses seed + k, so every prompt starts from the same noise."""
    TAB: ClassVar[str] = "generate"
    prompts: tuple[str, ...]
    sampling: Sampling = Sampling()
    images_per_prompt: int = 1
    negative: str = ""                  # guidance pushes away from this prompt instead of the learned null


@dataclass(frozen=True)
class Playback:
    """The Denoising playback tab, showing the recorded steps of the Generate step before it."""
    TAB: ClassVar[str] = "playback"


@dataclass(frozen=True)
class Sweep:
    """The Guidance sweep tab: rows are w, columns prompts, one seed for every cell (the rows replace sampling.w)."""
    TAB: ClassVar[str] = "sweep"
    prompts: tuple[str, ...]
    ws: tuple[float, ...] = REFERENCE_WS
    sampling: Sampling = SWEEP
    negative: str = ""


@dataclass(frozen=True)
class Similarity:
    """The Similarity tab: these texts against the images of the Generate step before it."""
    TAB: ClassVar[str] = "similarity"
    texts: tuple[str, ...]
    softmax_over: str = "texts"


@dataclass(frozen=True)
class Map:
    """The Embedding map tab: the atlas in one of its views, with these prompts placed on it."""
    TAB: ClassVar[str] = "map"
    method: str = "umap"
    prompts: tuple[str, ...] = REFERENCE_PROMPTS
    show_texts: bool = True


@dataclass(frozen=True)
class TwoPrompts:
    """The Interpolate tab's two prompts, which its slerp and its mix share."""
    TAB: ClassVar[str] = "interpolate"
    a: str
    b: str


@dataclass(frozen=True)
class Interpolate(TwoPrompts):
    """The slerp strip from prompt a to prompt b, one seed for every image."""
    points: int = 6
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class Mix(TwoPrompts):
    """The weighted mix: a alone, (1 - weight) a + weight b, b alone, from one seed."""
    weight: float = 0.5
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class Vary:
    """The Interpolate tab's variations, from the first image of the Generate step before it."""
    TAB: ClassVar[str] = "interpolate"
    count: int = 4
    sampling: Sampling = Sampling(seed=100)


@dataclass(frozen=True)
class PromptEdit:
    """The Debug tab's switch strip: prompt a for the first f of the steps, then prompt b; one image per f, one
    seed (f = 0: b alone, f = 1: a alone)."""
    TAB: ClassVar[str] = "debug"
    a: str
    b: str
    fractions: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class Words:
    """The Debug tab's word importance: the prompt with each word dropped in turn, one seed for all."""
    TAB: ClassVar[str] = "debug"
    prompt: str
    sampling: Sampling = Sampling()


@dataclass(frozen=True)
class ForwardNoise:
    """The Photo tab's forward process, on the first image of the Generate step before it."""
    TAB: ClassVar[str] = "photo"
    t: int = 100
    seed: int = 0


@dataclass(frozen=True)
class EditPhoto:
    """The Photo tab's SDEdit, on the first image of the Generate step before it: noised to `at` of T, then
    denoised with the prompt (and a strip of the same edit from other starts)."""
    TAB: ClassVar[str] = "photo"
    prompt: str
    at: float = 0.6
    sampling: Sampling = Sampling()


NEEDS_GENERATED = (Playback, Similarity, Vary, ForwardNoise, EditPhoto)


@dataclass(frozen=True)
class Run:
    """One button: the Generate step (if any) runs first, then `then` on its own tab."""
    label: str
    generate: Generate | None = None
    then: Sweep | Playback | Similarity | Map | Interpolate | Mix | Vary | PromptEdit | Words | ForwardNoise | \
        EditPhoto | None = None

    def __post_init__(self):
        if self.generate is None and (self.then is None or isinstance(self.then, NEEDS_GENERATED)):
            raise ValueError(f"run {self.label!r}: {type(self.then).__name__} needs a Generate step before it")

    @property
    def tab(self) -> str:
        """The tab the attendee lands on."""
        return self.then.TAB if self.then is not None else Generate.TAB


@dataclass(frozen=True)
class Experiment:
    id: str
    title: str
    template: str         # Markdown, two to six sentences about this project's models; {figure:spec} is measured
    runs: tuple[Run, ...]

    @property
    def explanation(self) -> str:
        """The text with its measured figures filled in (claims.render)."""
        return claims.render(self.template)


def run(label: str = "Run", generate: Generate | None = None, then=None) -> Run:
    return Run(label, generate, then)


# -- the tour -------------------------------------------------------------------------------------------------
EXPERIMENTS: tuple[Experiment, ...] = (
    Experiment(
        "tokens", "Text becomes numbers",
        "Before CLIP reads a prompt, its tokenizer cuts it into byte-pair pieces and looks each one up as an id in "
        "a 49,408-entry vocabulary, between a start and an end marker. Our flowers CLIP reads a fixed context of "
        "**77 tokens**: the second prompt here is longer, so the token view marks it as truncated and shows the "
        "part the model actually reads; nothing after token 77 can change the picture.",
        (run(generate=Generate((ROSE, LONG_PROMPT))),)),
    Experiment(
        "cosine", "Cosine similarity: prompts against pictures",
        "CLIP turns a prompt and a picture into 256 numbers each, and the cosine of the angle between the two "
        "vectors says how well they match. Even right pairs stay far from 1, because texts and images sit in "
        "different regions of the sphere: over the atlas, a photo and its species prompt score {cosine_right_mean:.2f} "
        "on average (wrong pairs {cosine_wrong_mean:.2f}) with our CLIP, and only about 0.3 with OpenAI's big ones. "
        "Generated flowers vary more: over {seeds:.0f} seeds the right pairs here score {generated_right_min:.2f} to "
        "{generated_right_max:.2f}, the wrong ones {generated_wrong_min:.2f} to {generated_wrong_max:.2f}, so a "
        "cosine alone says little. What counts is the ranking: the softmax over candidates (scaled by the learned "
        "temperature) turns small differences into confident choices, and our small CLIP puts the right one of 102 "
        "species first for {zero_shot_top1:.0%} of held-out photos.",
        (run(generate=Generate(REFERENCE_PROMPTS), then=Similarity(REFERENCE_PROMPTS + ("A purple elephant",))),)),
    Experiment(
        "shared-space", "One space for texts and images",
        "The map shows {atlas_photos:,.0f} flower photos and {atlas_texts:,.0f} texts (species prompts and captions) "
        "as our CLIP embeds "
        "them, squeezed to 2-D. They share one space but not one region: the texts gather in clumps of their own "
        "among the photos (the *modality gap*), and your prompts (stars) land among the texts rather than on the "
        "photos they describe. The five flowers5 species stand apart as tight islands, each with its species "
        "prompt inside. Centring subtracts each modality's mean direction, the constant part of the gap: watch how "
        "far the texts and your stars move (try *pca* for a linear view).",
        (run("Raw view: the gap", then=Map("umap")), run("Centred view", then=Map("umap-centered")))),
    Experiment(
        "guidance", "What guidance does: the w sweep",
        "Every step mixes two noise predictions of one U-Net: `eps = (1 + w) eps_cond - w eps_uncond`. All cells "
        "start from the same noise, so only w and the prompt change: w = -1 ignores the prompt (unconditional), "
        "w = 0 is the plain conditional model, w > 0 pushes past it towards the prompt. Between -1 and 0 the two "
        "are blended; below -1 the image is pushed *away* from the prompt.",
        (run("Sweep w from -2 to 2", then=Sweep(REFERENCE_PROMPTS, REFERENCE_WS)),)),
    Experiment(
        "high-w", "Too much guidance: artefacts at high w",
        "Turn w far past the reference range and the guided prediction extrapolates beyond anything the U-Net made "
        "in training: colours saturate, contrast blows out and petals break into blotches. Each column keeps its "
        "seed, so you can see where each prompt stops improving and starts to fall apart.",
        (run("Sweep w from 0 to 10", then=Sweep(REFERENCE_PROMPTS, (0.0, 2.0, 4.0, 7.0, 10.0))),)),
    Experiment(
        "playback", "Conditional vs unconditional, step by step",
        "Every step of a run is recorded: the playback shows the noisy x_t and three guesses of the final image, "
        "guided, conditional and unconditional x0, side by side. Early on all three are blurry averages; scrub "
        "right and watch the step where the conditional guess becomes a sunflower while the unconditional one "
        "lags behind (by the end all three agree: they are guesses from the same x_t). The plot's cosine between "
        "the prompt and CLIP's view of the guided x0 does not simply rise: averaged over {seeds:.0f} seeds it peaks "
        "at step {playback_peak_step:.0f} of {playback_steps:.0f} ({playback_peak:.2f}), while x0 is still a blur "
        "of the right colours (colour is what this CLIP reads best), dips to {playback_dip:.2f} at step "
        "{playback_dip_step:.0f} as edges and texture come in, and ends at {playback_end:.2f}.",
        (run(generate=Generate((SUNFLOWER,), Sampling(w=2.0, steps=PLAYBACK_STEPS)), then=Playback()),)),
    Experiment(
        "where-guidance-acts", "Where guidance acts: which pixels does the prompt change first?",
        "Attention maps (DAAM) cannot answer this here: our U-Net conditions on one token, the prompt's whole CLIP "
        "embedding, so its cross-attention weights are all 1. The two noise predictions can: the playback's last two "
        "panels are heat maps of |eps_c - eps_u| (what the prompt changes) and of the guidance term |w (eps_c - "
        "eps_u)| (what guidance adds), on one colour scale for every step. Scrub through the first third and compare "
        "the maps with the finished rose: do they trace its outline, or fill the places whose colour will stand out "
        "from the background? Then watch where they light up in the last steps. "
        "(`python benchmarks/where_guidance_acts.py` measures both over 12 images.)",
        (run(generate=Generate((ROSE,), Sampling(w=2.0, steps=PLAYBACK_STEPS)), then=Playback()),)),
    Experiment(
        "dropout", "Context dropout: how one U-Net is also unconditional",
        "Guidance needs an unconditional model, and ours is the same U-Net: in training, {context_dropout:.0%} of "
        "samples had their "
        "CLIP embedding swapped for a *learned null embedding* (per-sample dropout). The top row (w = -1) is that "
        "unconditional model, the same picture for every prompt because the seed is shared; the row below (w = 0) "
        "is the conditional one. The reference masks each element of the embedding instead; clipdiff ships only "
        "the learned-null model, but you can train the other with `python -m clipdiff train-unet --null-mode "
        "zero-mask --out runs/unet-zero --export checkpoints/unet-zero` and compare them with `python -m clipdiff "
        "eval-gen --unet checkpoints/unet --unet checkpoints/unet-zero`.",
        (run("Compare w = -1 and w = 0", then=Sweep(REFERENCE_PROMPTS, (-1.0, 0.0), Sampling())),)),
    Experiment(
        "slerp", "Interpolation: walking from one prompt to another",
        "Slerp walks along the sphere from the daisy prompt's embedding to the rose's, and every image starts from "
        "the same noise, so only the condition changes. Watch where the picture flips: often not in the middle, "
        "because the model's regions in embedding space are not evenly sized.",
        (run(then=Interpolate(DAISY, ROSE)),)),
    Experiment(
        "mix", "Composition: a weighted mix of two prompts",
        "A mix adds two prompts' unit directions, here half sunflower and half red rose, and keeps the first "
        "prompt's length; the strip shows each prompt alone and the mix, from one seed. A blend of directions is "
        "not 'both things': the model draws whatever flower lives near the mixed direction, often taking colour "
        "from one prompt and shape from the other. Move the weight slider and mix again.",
        (run(then=Mix(SUNFLOWER, ROSE, 0.5)),)),
    Experiment(
        "variations", "Image variations from an image embedding",
        "Our U-Net was trained on CLIP *image* embeddings as well as caption embeddings, so a picture's embedding "
        "conditions it as well as a prompt does. This draws a rose, gives the picture to CLIP's image tower, and "
        "samples four new images from that one embedding with other seeds: same kind of flower, new arrangement. "
        "Upload a photo of your own in the Variations box to try it on a real flower.",
        (run(generate=Generate((ROSE,)), then=Vary(count=4)),)),
    Experiment(
        "out-of-distribution", "Out of distribution: what the score can and cannot tell",
        "Every training image was a flower and our CLIP has only read flower captions, so 'elephant' and 'car' "
        "mean little to it while 'purple' and 'red' mean a lot. Ask for a purple elephant and you get a purple "
        "flower, and the CLIP score cannot tell: over {seeds:.0f} seeds these 'elephants' score "
        "{ood_elephant_score:.1f} against their prompt, as much as the reference prompts' own flowers score against "
        "theirs ({reference_score_min:.1f} to {reference_score_max:.1f}). What the score does tell is a picture from "
        "nothing: pure noise scores {ood_elephant_noise_score:.1f} against the same prompt (the app shows this "
        "baseline beside every score). The heatmap shows why: CLIP reads the pictures as 'A purple flower' (cosine "
        "{elephant_cosine_colour:.2f}) rather than as "
        "'An elephant' ({elephant_cosine_thing:.2f}).",
        (run(generate=Generate(OUT_OF_DISTRIBUTION, images_per_prompt=2),
             then=Similarity(OUT_OF_DISTRIBUTION + OOD_READINGS)),)),
    Experiment(
        "negation-counting", "Negation and counting",
        "CLIP's text tower sums a prompt up as one direction, and words like 'without' or 'three' barely move it: "
        "'a flower without petals' lands next to 'a flower with petals', 'three red roses' next to 'a red rose'. "
        "Each prompt starts from the same noise, so compare them in pairs: the differences are small and rarely the "
        "ones asked for, since our captions describe one flower per photo by what it has.",
        (run(generate=Generate(("A flower without petals", "A flower with petals", "Three red roses",
                                "A red rose"))),)),
    Experiment(
        "wording", "Prompt wording: terse against descriptive",
        "The U-Net learned from species names and Oxford-102 captions ('this flower has ...'), so prompts written "
        "like those captions land in familiar territory. Columns go from one word to a caption-style description, "
        "rows are w = 0 and w = 2, all from one seed: a description usually pins down colour and shape that a "
        "single word leaves to chance.",
        (run("Compare three wordings", then=Sweep(("rose", ROSE, CAPTION_STYLE), (0.0, 2.0), Sampling())),)),
    Experiment(
        "debugging", "Debugging a bad result",
        "When a picture is wrong, ask three questions in order. *Does CLIP read the picture as your prompt?* The "
        "nearest atlas captions of each image say what CLIP thinks it shows. *Is guidance the problem?* The sweep "
        "shows one seed at several w. *When does it go wrong?* The playback shows the step where it commits.",
        (run("1. What CLIP sees", generate=Generate(("A black tulip in the snow",), images_per_prompt=2),
             then=Similarity(("A black tulip in the snow", "A red tulip", "A dark purple flower", "Snow"))),
         run("2. Sweep w", then=Sweep(("A black tulip in the snow",), (-1.0, 0.0, 1.0, 2.0, 4.0), Sampling())),
         run("3. Watch it form", generate=Generate(("A black tulip in the snow",), Sampling(steps=PLAYBACK_STEPS)),
             then=Playback()))),
    Experiment(
        "negative", "Negative prompts: steering away from a colour",
        "Guidance pushes each step away from the unconditional guess: `eps = (1 + w) eps(prompt) - w eps(negative)`. "
        "A negative prompt puts its own guess where the learned null's was, so the picture is pushed away from *it*. "
        "With the negative 'yellow' the daisy's centre fades ({daisy_yellow_colour_null:.0%} of the pixels yellow, "
        "then {daisy_yellow_colour_negative:.0%}, over {seeds:.0f} seeds) and it stays a daisy (cosine to the "
        "nearest real photo {daisy_yellow_photo_likeness_null:.2f}, then {daisy_yellow_photo_likeness_negative:.2f}). "
        "The push can also leave the flowers behind: 'A rose' with the negative 'red' loses its red "
        "({rose_red_colour_null:.0%}, then "
        "{rose_red_colour_negative:.0%}) and turns into pale, grey, noisy shapes further from every real photo "
        "({rose_red_photo_likeness_null:.2f}, then {rose_red_photo_likeness_negative:.2f}), because to "
        "this model a rose *is* mostly red. In the playback tab the last panel becomes the negative x0, the guess the "
        "guidance steers away from, and the plot adds the cosine to the negative prompt.",
        (run("Daisies", generate=Generate((DAISY,), images_per_prompt=4)),
         run("Daisies, negative: yellow", generate=Generate((DAISY,), images_per_prompt=4, negative="yellow")),
         run("Roses, negative: red", generate=Generate((ROSE_PLAIN,), images_per_prompt=4, negative="red")))),
    Experiment(
        "prompt-editing", "When does the picture commit? Switching prompts part way",
        "A prompt can change while the picture forms: `[a daisy:a sunflower:0.5]` draws the daisy for the first half "
        "of the steps and the sunflower after (Stable Diffusion web UI's prompt editing; the Generate box reads it "
        "too). The strip starts every picture from one seed and switches from daisy to sunflower later and later: "
        "f = 0 is the sunflower alone, f = 1 the daisy alone. Watch how early it flips: the first few steps decide "
        "the layout and the colours, the rest only the details. The playback marks the switch on its plot.",
        (run("Daisy, then sunflower", then=PromptEdit(DAISY, SUNFLOWER, (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0))),)),
    Experiment(
        "word-importance", "Which words matter?",
        "CLIP sums a prompt up as one vector, so no map says which word did what: drop each word in turn, re-encode, "
        "and see. The shading is how far dropping a word moves the embedding; the strip is the same seed without "
        "it. In this 20-word caption the flower's colour words count most (dropping 'white', 'yellow' or 'orange' "
        "moves the embedding {wordy_colour_min:.2f} to {wordy_colour_max:.2f}, no other word more than "
        "{wordy_other_max:.2f}), while 'this flower has' and the whole tail about green leaves barely move it: our "
        "CLIP learned what tells flowers apart, and that is mostly colour.",
        (run("Weigh the words of a caption", then=Words(WORDY_CAPTION, Sampling(steps=10))),)),
    Experiment(
        "cost", "Cost: steps and samplers against time and quality",
        "Each sampler step is one U-Net call on a doubled batch (conditional and unconditional), so time grows with "
        "steps; samplers differ in what they make of few steps. The reference walks all 400 DDPM steps; here DDPM "
        "at 10 steps leaves noise, DDIM is cleaner, and DPM-Solver++ (a second-order solver) gives a clean flower in "
        "10. Where the steps fall matters as much: our default spaces DPM-Solver++'s steps by Karras et al.'s noise "
        "levels, packed where little noise is left and the details are decided; at 10 steps it lands about three "
        "times closer to the exact solution than even spacing. The same seed and prompts every time; the status "
        "line gives the time and the best CLIP score.",
        tuple(run(f"{sampler_spec(sampler).title}, {steps} steps",
                  generate=Generate(REFERENCE_PROMPTS, Sampling(sampler=sampler, steps=steps)))
              for sampler, steps in (("ddpm", 10), ("ddpm", 50), ("ddim", 10), ("dpmsolver", 10),
                                     ("dpmsolver-karras", 10), ("dpmsolver-karras", 4)))),
    Experiment(
        "forward-process", "What noise does to a picture",
        "Training teaches the U-Net to undo one recipe: `x_t = sqrt(a_bar_t) x0 + sqrt(1 - a_bar_t) eps`. The strip "
        "mixes one picture with one seed's noise at more and more t, so only the mix changes; the plot shows the "
        "picture's weight falling and the noise's rising. With this schedule (T = 400, linear betas) the picture is "
        "hard to make out by the middle, yet at the last step a_bar_t is still about 0.02: a trace of it is left, "
        "which the samplers treat as pure noise. Move the t slider, or upload a photo of your own.",
        (run("Noise a rose", generate=Generate((ROSE,), images_per_prompt=1), then=ForwardNoise(t=100)),)),
    Experiment(
        "sdedit", "Edit a picture: from a rose towards a sunflower",
        "SDEdit (Meng et al. 2021) noises a picture part way, to a fraction of T, and lets the model denoise it "
        "with a new prompt. A little noise keeps the picture's layout and colours; a lot gives the prompt a free "
        "hand; from 1 T it is a plain generation that ignores the picture. The strip shows the same edit from "
        "several starts and one seed. Below it, DDIM inversion walks the picture back up to the noise that makes it "
        "and down again: the round trip's error says how exact that noise is.",
        (run("Rose -> sunflower", generate=Generate((ROSE,), images_per_prompt=1),
             then=EditPhoto(SUNFLOWER, 0.6)),)),
)


def runs() -> list[tuple[Experiment, int, Run]]:
    """Every button of the tour: (experiment, index of the run in it, run)."""
    return [(e, i, r) for e in EXPERIMENTS for i, r in enumerate(e.runs)]
