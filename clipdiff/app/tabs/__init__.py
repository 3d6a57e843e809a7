"""One module per tab, each the same shape:

    handlers    top-level functions of (ctx, the components' values...): call them in a test, no server needed
    build(ctx)  lays out the tab's components and returns them (a dataclass)
    wire(ctx, tab, shared)  binds the handlers to the components
    TAKES, tour_fill(tab, setting), tour_steps(ctx, tab, shared, setting)
                the tour's settings (clipdiff.tour) this tab takes, the control values one puts in, and the
                handlers a tour button then runs (the very Calls the tab's own buttons run)

The Tour tab (tour.py) is a loop over the others.
"""
