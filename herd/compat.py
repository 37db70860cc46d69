"""Small compatibility shims (Python 3.10 has no tomllib; tomli is the same parser)."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["tomllib"]
