"""`herd completion bash|zsh`: a shell completion script for herd's subcommands and their options.

    eval "$(herd completion bash)"          # in ~/.bashrc
    eval "$(herd completion zsh)"           # in ~/.zshrc (bash completion through bashcompinit)

The script is made from the parser itself, so it always matches this version's commands.
"""

from __future__ import annotations

import argparse


def _subparsers(parser: argparse.ArgumentParser):
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            return a.choices
    return {}


def _options(parser: argparse.ArgumentParser) -> list[str]:
    opts = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    spec = getattr(parser, "config_spec", None)
    if spec:  # a configurable command: its --section.field overrides too
        try:
            import dataclasses

            cls = parser._config_cls()
            for f in dataclasses.fields(cls):
                v = getattr(cls(), f.name)
                if dataclasses.is_dataclass(v):
                    opts += [f"--{f.name}.{g.name}" for g in dataclasses.fields(v)]
                elif spec.get("section"):
                    opts.append(f"--{f.name.replace('_', '-')}")
        except Exception:  # noqa: BLE001, S110 (completion must never fail; the plain options remain)
            pass
    return sorted(set(opts))


def bash_script(parser: argparse.ArgumentParser) -> str:
    cmds = _subparsers(parser)
    cases = []
    for name, p in cmds.items():
        subs = _subparsers(p)
        if subs:
            for sname, sp in subs.items():
                cases.append(f'    "{name} {sname}") opts="{" ".join(_options(sp))}";;')
            cases.append(f'    "{name} "*) opts="{" ".join(subs)} --help";;')
        else:
            cases.append(f'    "{name} "*) opts="{" ".join(_options(p))}";;')
    return f"""# bash completion for herd (made by `herd completion bash`)
_herd_complete() {{
  local cur="${{COMP_WORDS[COMP_CWORD]}}" opts
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "{" ".join(cmds)} --help --version" -- "$cur")); return
  fi
  local key="${{COMP_WORDS[1]}} "
  [ "$COMP_CWORD" -gt 2 ] && key="${{COMP_WORDS[1]}} ${{COMP_WORDS[2]}}"
  case "$key" in
{chr(10).join(cases)}
  esac
  if [[ "$cur" == -* ]] || [ "$COMP_CWORD" -eq 2 -a -n "$opts" -a "${{opts:0:2}}" != "--" ]; then
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
  else
    COMPREPLY=($(compgen -f -- "$cur"))
  fi
}}
complete -o default -o bashdefault -F _herd_complete herd
"""


def cmd_completion(args) -> int:
    from herd.cli import build_parser

    script = bash_script(build_parser())
    if args.shell == "zsh":
        script = "autoload -U +X bashcompinit && bashcompinit\n" + script
    print(script, end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("completion", help="print a shell completion script (bash or zsh)",
                       description=__doc__.split("\n\n")[0] + " Add `eval \"$(herd completion bash)\"` to "
                                   "~/.bashrc (zsh: `eval \"$(herd completion zsh)\"` to ~/.zshrc).")
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell")
    p.set_defaults(func=cmd_completion)


__all__ = ["bash_script", "register"]
