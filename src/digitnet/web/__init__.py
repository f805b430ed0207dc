"""The draw-a-digit web app (``digitnet serve``).

``digitnet.web.server.create_app(model)`` builds the FastAPI app; FastAPI and uvicorn are the
optional ``web`` extra (``pip install 'digitnet[web]'``) and are imported only by that module.
"""

from __future__ import annotations
