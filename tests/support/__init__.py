"""What the tests share: tiny random-weight pipelines, the `spaces` stand-in, a live app on a free port, helpers for
calling the page's event functions, the pinned golden hashes, and where the repository lies."""
