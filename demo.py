"""negprompt-demo: `python demo.py` opens the comparison app (embedded model, offline, CPU is fine).

Also the app file of the Hugging Face Space (README front matter: `app_file: demo.py`).
"""

try:  # Hugging Face ZeroGPU wants `spaces` imported before torch; elsewhere the package is absent
    import spaces  # noqa: F401
except ImportError:
    pass

from negprompt_demo.page.launch import main

if __name__ == "__main__":
    main()
