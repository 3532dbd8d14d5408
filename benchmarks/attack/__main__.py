"""``python -m benchmarks.attack``: :func:`benchmarks.attack.driver.main`."""

from benchmarks.attack.driver import main

if __name__ == "__main__":
    main()
