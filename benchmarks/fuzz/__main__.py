"""``python -m benchmarks.fuzz``: :func:`benchmarks.fuzz.driver.main`."""

from benchmarks.fuzz.driver import main

if __name__ == "__main__":
    raise SystemExit(main())
