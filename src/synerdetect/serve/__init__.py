"""HTTP service for SynerDetect: ``synerdetect serve --checkpoint DIR`` (FastAPI on uvicorn).

Typical use::

    from synerdetect.engine.scoring import Scorer
    from synerdetect.serve import ServeSettings, create_app
    app = create_app(Scorer.from_checkpoint("runs/x/final", provenance=True), ServeSettings(max_batch=16))
    uvicorn.run(app, host="127.0.0.1", port=8000)

See :mod:`synerdetect.serve.app` for the endpoints and :class:`ServeSettings` for the limits.
"""

from ..extras import require_extra

require_extra("serve", "synerdetect.serve")  # FastAPI, uvicorn, ...: one pip line instead of an ImportError later

from .limits import ApiError, ServeSettings, read_api_keys  # noqa: E402

__all__ = ["ApiError", "ServeSettings", "create_app", "read_api_keys"]


def __getattr__(name):  # lazy: FastAPI is only imported when an app is built
    if name == "create_app":
        from .app import create_app

        return create_app
    raise AttributeError(name)
