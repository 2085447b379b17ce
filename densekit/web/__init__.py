"""Interactive web demo (Flask + a plain HTML/JS page, fully offline): ``python demo/web_demo.py``.

Flask is imported only when this package is used, so ``import densekit`` does not need it.
"""
from .state import ImageEntry, ImageStore

__all__ = ['create_app', 'build_engine', 'DemoEngine', 'ImageStore', 'ImageEntry']


def __getattr__(name):
    if name in ('create_app', 'build_engine', 'DemoEngine'):
        from . import app
        return getattr(app, name)
    raise AttributeError(name)
