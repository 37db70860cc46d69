"""The one config system: every command that takes a config (pretrain, sft, rm, rejection-sample, dpo,
curate, speedrun, scaling isoflop) reads it through `load`, prints it with `dumps`, and parses its
command line with `add_config_parser`.

A config is a plain dataclass, either *sectioned* (fields that are dataclasses: `TrainConfig` has
[model], [optim], [run], ...; `CurateConfig` has [dedup], [mix], [run], ...) or *flat* (scalar fields
only: the post-training configs, `SpeedrunConfig`, `IsoFLOPConfig`). A flat config has one section,
named after its command (`[sft]`, `[dpo]`, `[rejection-sample]`, `[speedrun]`, `[isoflop]`).

    cfg = load(TrainConfig, "herd-5m", ["--optim.lr", "1e-3", "--stages.0.batch_size=4"], names=...)

`config` is a TOML file or a name (a recipe in recipes/, curate's `default`, a speedrun preset);
`overrides` are `--section.field value` (or `section.field=value`) pairs, with list items by index
(`--stages.1.seq_len 512`) and dict entries by key (`--speedrun.caps.sotu 0`); a flat config takes
`--field value` as well (`--lr 1e-5`, `--eval-data x.jsonl`, `--quiet`, `--no-resume`). A value is read
for the field's type: a string as written, a list as `[a, b]` or `a,b`, a table as `{k = v}` (or
JSON), anything else as a TOML value. Order: dataclass defaults < file or preset < `values` < overrides.
Every mistake is one `HerdError` line: unknown field (with the closest name), wrong type, unknown
preset name (with the known ones), missing file, bad TOML.

`dumps(cfg)` writes TOML that `load` reads back to an equal config (fields set to None are left out).
No torch here: the CLI imports this to build `herd --help`.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from herd.compat import tomllib
from herd.errors import HerdError

# A dataclass may declare (as plain class attributes, not fields):
#   _config_aliases = {"old_name": "new_name"}   deprecated names still accepted, with a warning
#   _config_extra = ("overrides", OtherDataclass) keys that are fields of OtherDataclass go into the
#                                                 dict field `overrides` (checked with its types)


# ---- the schema ---------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _strip_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else Any
    return tp


def _is_dc(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _unknown(cls, key: str, where: str) -> HerdError:
    names = _names(cls)
    extra = getattr(cls, "_config_extra", None)
    pool = names + (_names(extra[1]) if extra else [])
    close = difflib.get_close_matches(key, pool, n=1, cutoff=0.6)
    prefix = where.rsplit(".", 1)[0] + "." if "." in where else ""
    hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(names)}"
    return HerdError(f"config: unknown field {where} ({hint})")


def _canonical_key(cls, key: str, where: str, warn: bool = True) -> str:
    aliases = getattr(cls, "_config_aliases", {})
    if key in aliases:
        new = aliases[key]
        if warn:
            base = where.rsplit(".", 1)[0] + "." if "." in where else ""
            print(f"herd: warning: config: {where} is deprecated; use {base}{new}", file=sys.stderr)
        return new
    return key


# ---- checking values against the annotations -----------------------------------------------------
def coerce(value: Any, tp, where: str):
    """Check `value` against the annotation `tp` (bool, int, float, str, list[...], dict[...], a
    dataclass, X | None) and return it typed; a mismatch is a HerdError naming `where`."""
    if value is None and _strip_optional(tp) is not tp:
        return None
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if _is_dc(tp):
        if dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        if not isinstance(value, dict):
            raise HerdError(f"config: {where} must be a table, got {value!r}")
        return build(tp, value, where)
    if tp is list or origin is list:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise HerdError(f"config: {where} must be a list, got {value!r}")
        return [coerce(v, args[0], f"{where}.{i}") if args else v for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise HerdError(f"config: {where} must be a table, got {value!r}")
        args = typing.get_args(tp)
        return {k: coerce(v, args[1], f"{where}.{k}") if args else v for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise HerdError(f"config: {where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int)
                                           or (isinstance(value, float) and value.is_integer())):
            raise HerdError(f"config: {where} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise HerdError(f"config: {where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise HerdError(f"config: {where} must be a string, got {value!r}")
        return value
    return value


def build(cls, d: Mapping, where: str = ""):
    """A `cls` instance from a raw dict (missing fields take their defaults); names and types checked."""
    hints, names = _hints(cls), set(_names(cls))
    extra = getattr(cls, "_config_extra", None)
    kw, direct = {}, {}
    for key, value in d.items():
        key = str(key)
        at = f"{where}.{key}" if where else key
        key = _canonical_key(cls, key, at)
        if key in names:
            if key in kw:
                raise HerdError(f"config: {at} is given twice (under its old and its new name)")
            kw[key] = coerce(value, hints[key], f"{where}.{key}" if where else key)
        elif extra and key in _names(extra[1]):
            direct[key] = value
        else:
            raise _unknown(cls, key, at)
    if extra:
        field_name, other = extra
        merged = {**(kw.get(field_name) or {}), **direct}
        oh = _hints(other)
        for k, v in merged.items():
            if k not in oh:
                raise _unknown(other, k, f"{where}.{k}" if where else k)
            merged[k] = coerce(v, oh[k], f"{where}.{k}" if where else k)
        kw[field_name] = merged
    return cls(**kw)


def from_dict(cls, d: Mapping):
    """`cls` from a raw (e.g. JSON or TOML) dict, checked like a config file."""
    return build(cls, _canonicalize(cls, dict(d), "", warn=True), "")


def _canonicalize(cls, d: dict, where: str, warn: bool) -> dict:
    """Rename deprecated keys (recursively) so they merge with the defaults under their new names."""
    out = {}
    hints = _hints(cls)
    for key, value in d.items():
        at = f"{where}.{key}" if where else str(key)
        new = _canonical_key(cls, str(key), at, warn)
        tp = _strip_optional(hints.get(new, Any))
        if _is_dc(tp) and isinstance(value, dict):
            value = _canonicalize(tp, value, f"{where}.{new}" if where else new, warn)
        elif typing.get_origin(tp) is list and isinstance(value, list):
            (item,) = typing.get_args(tp) or (Any,)
            if _is_dc(item):
                value = [_canonicalize(item, v, f"{at}.{i}", warn) if isinstance(v, dict) else v
                         for i, v in enumerate(value)]
        if new in out:
            raise HerdError(f"config: {at} is given twice (under its old and its new name)")
        out[new] = value
    return out


def _merge(cls, base: dict, top: Mapping) -> dict:
    """`top` over `base`: sections (dataclass fields) merge; every value, a list or a dict field
    included, is replaced (a file's `weights = {...}` is the whole table, not an addition)."""
    out = dict(base)
    hints = _hints(cls)
    for k, v in top.items():
        tp = _strip_optional(hints.get(k, Any))
        if _is_dc(tp) and isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(tp, out[k], v)
        else:
            out[k] = v
    return out


# ---- reading a file or a name ---------------------------------------------------------------------
def read_toml(path: str | Path) -> dict:
    p = Path(path)
    try:
        return tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise HerdError(f"{p}: not valid TOML ({e})") from None
    except OSError as e:
        raise HerdError(f"cannot read config file {p}: {e.strerror}") from None


def resolve(config: str | Path, names: Mapping[str, Any] | None = None) -> dict:
    """The raw dict of a TOML file or a known name. A name maps to a dict, a TOML path, or a function
    returning either; a bare known name wins over a file of that name in the working directory."""
    names = names or {}
    p = Path(config)
    key = str(config).removesuffix(".toml")
    bare = key == str(config) and "/" not in key and "\\" not in key
    if p.is_file() and not (bare and key in names):
        return read_toml(p)
    if key in names:
        src = names[key]
        src = src() if callable(src) else src
        return read_toml(src) if isinstance(src, (str, Path)) else dict(src)
    src = names.get(p.stem) if p.suffix == ".toml" else None
    src = src() if callable(src) else src
    if isinstance(src, (str, Path)) and Path(src).name == p.name and Path(src).parent.name == p.parent.name:
        # the docs' recipes/herd-5m.toml or herd/curate/default.toml from outside the repository: the
        # packaged file of that name
        return read_toml(src)
    known = ", ".join(sorted(names))
    if p.suffix == ".toml" or "/" in str(config) or "\\" in str(config) or not known:
        hint = f"; or a name: {known}" if known else ""
        raise HerdError(f"config file not found: {p} (give a TOML file{hint})")
    raise HerdError(f"unknown config name {str(config)!r} (known: {known}; or give a TOML file)")


def _section_table(doc: dict, section: str | None) -> dict:
    """A flat config reads its own table ([sft]) when the file has one, else the whole file."""
    if section is None:
        return doc
    for k in (section, section.replace("-", "_"), section.replace("_", "-")):
        if isinstance(doc.get(k), dict):
            return doc[k]
    return doc


# ---- command-line overrides -----------------------------------------------------------------------
def _parse_toml_value(text: str):
    try:
        return True, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return False, None


def parse_value(text: str, tp):
    """A command-line value read for the annotation `tp` (see the module docstring)."""
    if not isinstance(text, str):
        return text
    tp = _strip_optional(tp)
    origin = typing.get_origin(tp)
    if tp is str:
        if text[:1] in ("'", '"'):
            ok, v = _parse_toml_value(text)
            if ok and isinstance(v, str):
                return v
        return text
    if tp is list or origin is list:
        s = text.strip()
        if s.startswith("["):
            ok, v = _parse_toml_value(s)
            return v if ok else text
        args = typing.get_args(tp)
        return [parse_value(t.strip(), args[0] if args else Any) for t in s.split(",") if t.strip()]
    if tp is dict or origin is dict:
        ok, v = _parse_toml_value(text)
        if ok:
            return v
        try:
            return json.loads(text)
        except ValueError:
            return text
    ok, v = _parse_toml_value(text)
    return v if ok else text


def split_overrides(items: list[str]) -> list[tuple[str, str]]:
    """`["--a.b", "1", "c.d=2", "--e=3"]` -> [("a.b", "1"), ("c.d", "2"), ("e", "3")]."""
    pairs, i = [], 0
    items = [str(x) for x in items]
    while i < len(items):
        key = items[i]
        if not key.startswith("--") and "=" not in key:
            raise HerdError(f"config override {key!r}: expected --section.field value")
        key = key[2:] if key.startswith("--") else key
        if "=" in key:
            key, val = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise HerdError(f"config override --{key} has no value")
            val = items[i + 1]
            i += 2
        pairs.append((key, val))
    return pairs


def _apply(cls, d: dict, key: str, text, section: str | None, seen: set) -> None:
    """Set `key` (a dotted path, checked against the schema) in the raw dict `d`."""
    parts = key.split(".")
    if section is not None and len(parts) > 1 and parts[0].replace("-", "_") == section.replace("-", "_"):
        parts = parts[1:]  # --sft.lr: the flat config's own section
    node, tp, path = d, cls, []
    for j, part in enumerate(parts):
        last = j == len(parts) - 1
        tp = _strip_optional(tp)
        where = ".".join(([section] if section else []) + path + [part])
        if _is_dc(tp):
            name = part.replace("-", "_")
            name = _canonical_key(tp, name, where)
            extra = getattr(tp, "_config_extra", None)
            if name in _names(tp):
                ftp = _hints(tp)[name]
            elif extra and name in _names(extra[1]):
                if not isinstance(node.get(extra[0]), dict):
                    node[extra[0]] = {}
                node = node[extra[0]]  # e.g. --model.n_layers: an entry of model.overrides
                ftp = _hints(extra[1])[name]
            else:
                raise _unknown(tp, name, where)
            path.append(name)
            if last:
                value = parse_value(text, ftp)
                full = ".".join(path)
                if full in seen and isinstance(node.get(name), list) and isinstance(text, str) \
                        and not text.strip().startswith("[") and isinstance(value, list):
                    node[name] = node[name] + value  # a list field given again: the values add up
                else:
                    node[name] = value
                seen.add(full)
                return
            nxt = node.get(name)
            if not isinstance(nxt, (dict, list)):
                if _is_dc(_strip_optional(ftp)) or typing.get_origin(_strip_optional(ftp)) is dict \
                        or _strip_optional(ftp) is dict:
                    nxt = node[name] = {} if nxt is None else nxt
                else:
                    raise HerdError(f"config override {key}: {'.'.join(path)} is not a table")
            node, tp = nxt, ftp
        elif tp is list or typing.get_origin(tp) is list:
            if not part.isdigit():
                raise HerdError(f"config override {key}: {'.'.join(path)} is a list; index it by number")
            idx = int(part)
            if idx >= len(node):
                raise HerdError(f"config override {key}: index {idx} out of range "
                                f"({'.'.join(path)} has {len(node)} item(s); set the whole list instead)")
            args = typing.get_args(tp)
            item = args[0] if args else Any
            path.append(part)
            if last:
                node[idx] = parse_value(text, item)
                return
            node, tp = node[idx], item
        elif tp is dict or typing.get_origin(tp) is dict:
            args = typing.get_args(tp)
            vt = args[1] if args else Any
            path.append(part)
            if last:
                node[part] = parse_value(text, vt)
                return
            node = node.setdefault(part, {})
            tp = vt
        else:
            raise HerdError(f"config override {key}: {'.'.join(path)} is not a table")


def apply_overrides(cls, d: dict, overrides, section: str | None = None) -> dict:
    """Apply `--section.field value` pairs (a list of strings, or (key, text) pairs) to the raw dict."""
    pairs = (overrides if overrides and isinstance(overrides[0], tuple)
             else split_overrides(list(overrides or [])))
    seen: set = set()
    for key, text in pairs:
        _apply(cls, d, key, text, section, seen)
    return d


# ---- the loader -----------------------------------------------------------------------------------
def load(cls, config: str | Path | None = None, overrides=None, *, names: Mapping[str, Any] | None = None,
         section: str | None = None, values: Mapping | None = None):
    """Read `config` (a TOML file, a known name, or None for the defaults), merge `values` (a raw dict,
    e.g. from shorthand flags) and `overrides` (`--section.field value` strings) over it, check names
    and types -> a `cls` instance. `section` names a flat config's table (its command). Semantic
    checks are the config's own `validate()`, which callers run before using it."""
    d = dataclasses.asdict(cls())
    if config is not None and str(config) != "":
        doc = _section_table(resolve(config, names), section)
        d = _merge(cls, d, _canonicalize(cls, doc, section or "", warn=True))
    if values:
        d = _merge(cls, d, _canonicalize(cls, dict(values), section or "", warn=True))
    apply_overrides(cls, d, overrides or [], section)
    return build(cls, d, section or "")


# ---- writing TOML ---------------------------------------------------------------------------------
def _key(k: str) -> str:
    k = str(k)
    if k and all(c.isalnum() and c.isascii() or c in "_-" for c in k):
        return k
    return _str(k)


def _str(s: str) -> str:
    out = []
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _value(v) -> str:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        v = {f.name: getattr(v, f.name) for f in dataclasses.fields(v)}
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v != v:
            return "nan"
        if v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        if abs(v) >= 1e6:  # 3e+16, not 30000000000000000.0 (still the exact value)
            for p in range(17):
                t = f"{v:.{p}e}"
                if float(t) == v:
                    return t.replace("e+0", "e+").replace("e-0", "e-")
        return repr(v)
    if isinstance(v, str):
        return _str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v if x is not None) + "]"
    if isinstance(v, dict):
        items = [f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise HerdError(f"config: cannot write {v!r} as TOML")


def _table(obj, path: list[str], lines: list[str]) -> None:
    """Scalars of `obj` under the current header, then its sub-tables."""
    subs, unset = [], []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if v is None:
            unset.append(f.name)
        elif dataclasses.is_dataclass(v):
            subs.append((f.name, v, False))
        elif isinstance(v, list) and v and all(dataclasses.is_dataclass(x) for x in v) and not path:
            subs.append((f.name, v, True))
        else:
            lines.append(f"{_key(f.name)} = {_value(v)}")
    for name in unset:
        lines.append(f"# {name}: not set")
    for name, v, many in subs:
        header = ".".join(_key(p) for p in path + [name])
        for item in (v if many else [v]):
            lines.append("")
            lines.append(f"[[{header}]]" if many else f"[{header}]")
            _table(item, path + [name], lines)


def dumps(cfg, section: str | None = None, header: str = "") -> str:
    """The config as TOML (`load(type(cfg), FILE, section=section)` reads it back to an equal config)."""
    lines = [f"# {h}" for h in header.splitlines()]
    if section is not None:
        lines.append(f"[{_key(section)}]")
    _table(cfg, [section] if section else [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def print_config(cfg, section: str | None = None, header: str = "", notes: Callable | None = None) -> int:
    """`--print-config`: the resolved config as TOML; then its validation result (and `notes(cfg)`,
    e.g. pretrain's step plan) as comments, so the output still loads as --config."""
    print(dumps(cfg, section, header), end="")
    try:
        if hasattr(cfg, "validate"):
            cfg.validate()
    except HerdError as e:
        print(f"\n# not runnable as is: {e}")
        print(f"herd: note: not runnable as is: {e}", file=sys.stderr)
        return 0
    if notes:
        extra = notes(cfg)
        if extra:
            print()
            print("\n".join(f"# {line}" for line in extra))
    return 0


# ---- the command line -----------------------------------------------------------------------------
class ConfigParser(argparse.ArgumentParser):
    """A subcommand parser that takes the config overrides out of its arguments before argparse sees
    them: every `--a.b` token (with its value), and for a flat config every `--field` / `--no-field`
    that is not one of the parser's own options. They land in `args.config_overrides`."""

    config_spec: dict = {}

    def _config_cls(self):
        cls = self.config_spec["cls"]
        return cls() if callable(cls) and not isinstance(cls, type) else cls

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        overrides, rest = self._take_overrides(args)
        ns, left = super().parse_known_args(rest, namespace)
        ns.config_overrides = list(getattr(ns, "config_overrides", None) or []) + overrides
        return ns, left

    def _take_overrides(self, args: list[str]):
        own = set(self._option_string_actions)
        flat = self.config_spec.get("section") is not None
        fields = None  # the config's top-level fields, read only when a --name token needs them
        if any(a.startswith("--") and a not in own and "." not in a.split("=")[0] for a in args):
            fields = {n: _strip_optional(t) for n, t in _hints(self._config_cls()).items()}
        out, rest, i = [], [], 0
        while i < len(args):
            a = args[i]
            name = a.split("=", 1)[0]
            if a == "--":
                rest += args[i:]
                break
            if not a.startswith("--") or name in own:
                rest.append(a)
                i += 1
                continue
            key = name[2:]
            field = key.replace("-", "_")
            # --section.field, any --field of a flat config, a whole top-level field (--stages [...])
            if "." in key or flat or field in (fields or {}):
                if "=" in a:
                    out.append((key, a.split("=", 1)[1]))
                    i += 1
                    continue
                if flat and "." not in key:
                    if fields.get(field) is bool or (field.startswith("no_") and fields.get(field[3:]) is bool
                                                     and field not in fields):
                        value = "true"
                        if field not in fields:
                            key, value = key[3:], "false"
                        elif i + 1 < len(args) and args[i + 1].lower() in ("true", "false"):
                            value = args[i + 1].lower()
                            i += 1
                        out.append((key, value))
                        i += 1
                        continue
                if i + 1 >= len(args) or args[i + 1].startswith("--"):  # (write --key=--x for such a value)
                    raise HerdError(f"config override --{key} has no value")
                out.append((key, args[i + 1]))
                i += 2
                continue
            rest.append(a)
            i += 1
        return out, rest

    def format_help(self) -> str:
        try:
            listing = fields_help(self._config_cls(), self.config_spec.get("section"),
                                  self.config_spec.get("help") or {})
        except Exception as e:  # help must never fail
            listing = f"(config fields unavailable: {e})"
        saved = self.epilog
        self.epilog = ((saved + "\n\n") if saved else "") + listing
        try:
            return super().format_help()
        finally:
            self.epilog = saved


def fields_help(cls, section: str | None, helps: Mapping[str, str]) -> str:
    """The help's list of config fields with their defaults."""
    defaults = cls()
    if section is not None:
        lines = [f"config fields (--FIELD VALUE or --{section}.FIELD VALUE; a bool also as --FIELD / "
                 f"--no-FIELD; [{section}] in a TOML file):"]
        for f in dataclasses.fields(cls):
            v = getattr(defaults, f.name)
            text = helps.get(f.name, "")
            d = "not set" if v is None else _value(v)
            lines.append(f"  --{f.name.replace('_', '-'):<18} {text}{' ' if text else ''}(default: {d})")
        return "\n".join(lines)
    lines = [("config fields (--SECTION.FIELD VALUE; list items by index, table entries by key; "
              "docs/config.md):")]
    for f in dataclasses.fields(cls):
        v = getattr(defaults, f.name)
        if dataclasses.is_dataclass(v):
            items = ", ".join(f"{g.name}={_value(getattr(v, g.name))}" for g in dataclasses.fields(v)
                              if getattr(v, g.name) is not None)
            lines.append(textwrap.fill(items, 108, initial_indent=f"  [{f.name}] ",
                                       subsequent_indent="      "))
        elif isinstance(v, list):
            tp = typing.get_args(_hints(cls)[f.name])
            item = tp[0] if tp else None
            keys = ", ".join(_names(item)) if _is_dc(item) else ""
            lines.append(f"  [[{f.name}]] {keys}"
                         + (f" (default: {len(v)} item(s))" if v else " (default: none)"))
        else:
            lines.append(f"  {f.name}={_value(v)}")
    return "\n".join(lines)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps a one-paragraph description; keeps text with line breaks (examples, the field list) as is."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def add_config_parser(sub, name: str, cls, *, section: str | None = None, names=None, config_help: str = "",
                      field_help: Mapping[str, str] | None = None, **kw) -> ConfigParser:
    """`sub.add_parser(name, ...)` for a configurable command: --config, --print-config, overrides.
    `cls` (the config dataclass, or a function returning it so the import waits until it is needed)
    and `names` (known config names, or a function returning them) are kept for `load_args`."""
    kw.setdefault("allow_abbrev", False)
    kw.setdefault("formatter_class", _HelpFormatter)
    saved, sub._parser_class = sub._parser_class, ConfigParser
    try:
        p = sub.add_parser(name, **kw)
    finally:
        sub._parser_class = saved
    p.config_spec = {"cls": cls, "section": section, "names": names, "help": field_help or {}}
    p.add_argument("--config", metavar="FILE_OR_NAME",
                   help=config_help or "TOML config file (or a known name); flags and --section.field "
                                       "override it")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config as TOML (loadable with --config) and exit; "
                        "with no other argument: the defaults")
    p.set_defaults(config_parser=p)
    return p


def load_args(args, values: Mapping | None = None, config: str | Path | None = None,
              first_overrides: list[str] | None = None):
    """The config of a command parsed by an `add_config_parser` parser: `--config` (or `config`),
    then `values` (from shorthand flags), then `first_overrides` (e.g. curate's `--set k=v`), then the
    `--section.field` overrides."""
    spec = args.config_parser.config_spec
    cls = args.config_parser._config_cls()
    names = spec["names"]
    names = names() if callable(names) else names
    pairs = split_overrides(list(first_overrides or [])) + list(getattr(args, "config_overrides", []))
    return load(cls, config if config is not None else args.config, pairs,
                names=names, section=spec["section"], values=values)


__all__ = ["load", "load_args", "dumps", "print_config", "from_dict", "build", "coerce", "parse_value",
           "apply_overrides", "split_overrides", "resolve", "read_toml", "add_config_parser", "ConfigParser",
           "fields_help"]
