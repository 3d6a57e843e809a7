"""The Gradio app: one gr.Blocks over the clipdiff core, one module per tab.

    limits.py    every bound and default the app holds requests to (gradio-free)
    context.py   the loaded models, the output folder and the app's settings: what every handler gets first
    inputs.py    the server-side checks of what a browser or API client sends
    session.py   what a browser session keeps between events: its last run
    history.py   a session's runs, the ones it pins kept for comparing
    runs.py      a prepared run as the tabs show it: sample() streams previews, save_results() writes PNGs that
                 carry their parameters with CLIP scores, stop_run() stops it; its outcome as data (RunStatus: step
                 of steps, done, stopped, refused), from which statuses are rendered
    figures.py   the plotly figures
    errors.py    the last line of defence: an unexpected failure answered in one sentence; a refusal said in
                 the tab's status
    controls.py  the sampling controls every tab builds the same way
    wiring.py    a handler bound to its components (Call; with a status, its refusals leave every other
                 output as it was), and what the tabs link to (Shared)
    page.py      the page's own CSS and JavaScript
    tabs/        one module per tab: its handlers as top-level functions of (ctx, values...), build(), wire(),
                 and tour_fill() and tour_steps() for the tour
    blocks.py    build_app (the list of tabs) and serve

Handlers are plain functions of the values the browser (or a gradio_client script) sends: they check and clamp
every value, call core functions, and turn the results into pictures, plots and text. No model maths lives here,
and nothing in the core imports this package. Anything that runs a model shares one concurrency group ("model");
cheap handlers (token view, scrubbing, parameter loading) have their own, so they stay quick during a run.
"""
