"""Built-in quantart stages. Each module exposes ``stage``, registered in the ``quantart.stages`` entry-point
group exactly like a third-party plugin. Modules import only light things at the top (no torch), so that
``quantart --help`` stays instant; the work is imported inside each run function."""
