"""negprompt-demo: `python demo.py` opens the comparison app (embedded model, offline, CPU is fine)."""

from negprompt_demo.app import main

if __name__ == "__main__":
    main()
