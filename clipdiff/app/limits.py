"""Every bound and default the app holds a request to, and its own timings. Gradio-free: the checks (inputs.py),
the controls (tabs/), app.py's flags and the tests read them here. The sampling settings' own defaults and bounds
(w, steps, sampler, seed) are the core's, shared with the CLI (clipdiff.sampling); they are named here too, so
this file lists everything the app enforces."""
from ..sampling import (DEFAULT_SAMPLER, DEFAULT_STEPS, DEFAULT_W, PREVIEW_EVERY_S, SEED_RANGE,  # noqa: F401
                        STEPS_RANGE, W_RANGE)
from ..schedulers import SAMPLERS  # noqa: F401

# -- what one request may ask for: everything from the browser or the API is clamped to these -------------------
MAX_TEXT_CHARS = 10_000          # a prompt box longer than this is rejected, not truncated
MAX_PROMPTS = 8                  # prompts per run (one per line)
MAX_IMAGES_PER_PROMPT = 8
IMAGES_PER_PROMPT = 2            # the control's start; a request that sends none gets one image
MAX_BATCH = 16                   # images sampled together in one run
MAX_SWEEP_PROMPTS = 4
MAX_SWEEP_WS = 9
MAX_IMAGE_STEPS = 1600           # images x steps per run: one attendee's run must not hold the room for long
INTERPOLATION_POINTS = (2, 12)
INTERPOLATION_POINTS_DEFAULT = 6
VARIATIONS_DEFAULT = 4
MIX_WEIGHT_DEFAULT = 0.5
PROMPT_EDIT_FRACTIONS = (0.0, 0.25, 0.5, 0.75, 1.0)   # the switch strip's start: B alone ... A alone
MAX_PROMPT_EDIT_FRACTIONS = 9    # images in one switch strip
MAX_ABLATED_WORDS = 20           # words dropped one at a time in one word-importance run (+1 image: all words)
FORWARD_STRIP = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0)   # the forward process's strip: fractions of T - 1
EDIT_AT_DEFAULT = 0.6            # SDEdit's start: enough noise for the prompt to reshape the photo, some of it kept
EDIT_STRIP = (0.2, 0.4, 0.6, 0.8, 1.0)   # the edit's strip: the same edit from these starts (fractions of T)
INVERSION_STEPS = (1, 100)       # DDIM steps each way of an inversion round trip (two U-Net passes per step pair)
INVERSION_STEPS_DEFAULT = 50
MAX_SIMILARITY_TEXTS = 32
NEAREST_CAPTIONS = 5
MAX_UPLOADS = 16
MAX_UPLOAD_SIZE = "10mb"
MAX_IMAGE_PIXELS = 40_000_000    # refuse to decode bigger pictures (decompression bombs)

# -- how the app runs -----------------------------------------------------------------------------------------
# Model runs at once (app.py --concurrency); others wait in the queue. Sampling runs in flight together share their
# U-Net forwards (serving.batching.StepBatcher), so a run more in flight costs its rows in each forward, not a place
# in the queue; 8 runs of up to 8 images fill one forward (MAX_FORWARD_ROWS).
MODEL_CONCURRENCY = 8
QUEUE_SIZE = 16                  # waiting requests before "queue is full" (app.py --max-queue)
# How often Gradio's queue looks for an event to start while it has none, or none it may start (gradio/queueing.py
# Queue.sleep_when_free; Gradio's own is 1 ms, with no public setting). A thousand wake-ups a second take the GIL and
# a core from the U-Net's threads: on 2 cores a lone 4-image click took 0.69 s with it and 0.64 s at 10 ms
# (benchmarks/README.md, "Changes and their figures"). An event now starts up to 10 ms later, against 500+ ms of
# sampling.
QUEUE_POLL_S = 0.01
LIGHT_CONCURRENCY = 4            # cheap handlers at once, beside the model runs
# A session's last run (its frames for playback) is dropped 30 minutes after it was made, or an hour after the
# browser tab closed (Gradio's fixed grace period for reopening), whichever Gradio sees first.
SESSION_TTL_S = 1800
OUTPUT_MAX_AGE_S = 3600          # our PNGs and GIFs on disk
MAX_RUNS = 12                    # runs a session's history lists (the Compare runs tab); the oldest unpinned go
MAX_PINNED = 4                   # runs pinned to compare side by side (they keep their recorded steps)
HISTORY_FRAME_BYTES = 64 * 2**20  # a session's recorded steps beyond its newest run: older runs' steps go past this
WALL_REFRESH_S = 3               # the Wall tab looks for new pictures this often (a cheap check when none)
PLAY_FPS = 7                     # the playback's Play button: recorded steps a second (its speed control's start)
PLAY_FPS_RANGE = (1, 30)
PREVIEW_SCALE = 4                # pixels per image pixel in small galleries (ranking, what CLIP sees)
STREAM_SCALE = 2                 # preview pixels per image pixel while sampling (the final PNGs are full size)
