"""The dashboard: server-rendered pages over the same database, storage and figure builders as the API.

Pages read with the browser's session cookie (set by signing in with an API token); forms that
change something post to the REST API from the page's script, so the API stays the one place
that validates uploads and options.
"""

from .router import install_web

__all__ = ["install_web"]
