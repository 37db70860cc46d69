"""Code Shield: insecure code in several languages is flagged with CWE ids, safe code is not.

Runs Meta's codeshield rules (regex, then semgrep 1.70's semgrep-core on suspicious code)."""

import json
import subprocess
import sys

import pytest

from herd.safety.code_shield import CodeShield, code_blocks, semgrep_core

INSECURE = [  # (language, code, expected CWE, expected treatment)
    ("python", "import os\nos.system('ls ' + user_dir)\n", "CWE-78", "warn"),
    ("python", "import pickle\nobj = pickle.loads(request.data)\n", "CWE-502", "warn"),
    ("python", "import subprocess\nsubprocess.call(cmd, shell=True)\n", "CWE-78", "warn"),
    ("python", "import hashlib\nh = hashlib.md5(password.encode()).hexdigest()\n", "CWE-328", "warn"),
    ("python", "import yaml\ncfg = yaml.load(open('c.yml'), Loader=yaml.Loader)\n", "CWE-502", None),
    ("python", "user_input = input()\nresult = eval(user_input)\n", "CWE-94", None),
    (
        "c",
        "#include <stdio.h>\nint main(void) {\n  char buf[16];\n  gets(buf);\n  return 0;\n}\n",
        "CWE-242",
        "block",
    ),
    (
        "c",
        '#include <stdlib.h>\nint main(void) {\n  system(getenv("CMD"));\n  return 0;\n}\n',
        "CWE-78",
        "warn",
    ),
    ("cpp", "#include <cstring>\nvoid f(char* s) { char d[8]; strcat(d, s); }\n", "CWE-120", "warn"),
    (
        "java",
        "import java.security.MessageDigest;\nclass A {\n  byte[] h(byte[] x) throws Exception {\n"
        '    return MessageDigest.getInstance("MD5").digest(x);\n  }\n}\n',
        "CWE-327",
        "warn",
    ),
    ("javascript", "const x = req.query.code;\neval(x);\n", "CWE-95", "warn"),
]

SAFE = [
    ("python", "def add(a, b):\n    return a + b\n"),
    ("python", "import json\nwith open('x.json') as f:\n    data = json.load(f)\n"),
    ("python", "import subprocess\nsubprocess.run(['ls', '-l'], check=True)\n"),
    ("python", "import hashlib\nh = hashlib.sha256(b'data').hexdigest()\n"),
    ("python", "import yaml\ncfg = yaml.safe_load(open('c.yml'))\n"),
    ("python", "nums = [x * x for x in range(10)]\nprint(sum(nums))\n"),
    (
        "c",
        "#include <stdio.h>\nint main(void) {\n  char buf[16];\n"
        "  fgets(buf, sizeof buf, stdin);\n  return 0;\n}\n",
    ),
    ("c", '#include <stdio.h>\nvoid f(const char *s) {\n  printf("%s\\n", s);\n}\n'),
    ("java", "class A {\n  int add(int a, int b) {\n    return a + b;\n  }\n}\n"),
    ("javascript", "function add(a, b) {\n  return a + b;\n}\nconsole.log(add(1, 2));\n"),
    ("rust", 'fn main() {\n    let v: Vec<i32> = (1..4).collect();\n    println!("{:?}", v);\n}\n'),
    ("php", "<?php\n$name = htmlspecialchars($_GET['name']);\necho $name;\n"),
]


@pytest.fixture(scope="module")
def shield():
    if semgrep_core() is None:
        pytest.skip("semgrep 1.70's semgrep-core is not installed (scripts/setup.sh installs it)")
    return CodeShield()


@pytest.mark.parametrize("lang,code,cwe,treatment", INSECURE)
def test_insecure_flagged(shield, lang, code, cwe, treatment):
    r = shield.scan_code(code, lang)
    assert r.treatment in ("block", "warn"), (lang, code)
    assert cwe in {i.cwe_id for i in r.issues}, [i.to_dict() for i in r.issues]
    if treatment:
        assert r.treatment == treatment
    assert all(i.line is not None and 1 <= i.line <= code.count("\n") for i in r.issues)


@pytest.mark.parametrize("lang,code", SAFE)
def test_safe_not_flagged(shield, lang, code):
    r = shield.scan_code(code, lang)
    assert r.treatment == "ignore" and r.issues == [], [i.to_dict() for i in r.issues]


def test_semgrep_stage_runs(shield):
    """semgrep (not only the regex stage) reports: the finding comes from the semgrep analyzer."""
    code = "import subprocess\nsubprocess.call(cmd, shell=True)\n"
    assert {i.analyzer for i in shield.scan_code(code, "python").issues} == {"semgrep"}


def test_model_output_blocks(shield):
    answer = (
        "Here is how:\n\n```c\n#include <stdio.h>\nint main(void) {\n  char b[8];\n  gets(b);\n}\n```\n"
        "and in Python:\n```python\nprint('hi')\n```\n"
    )
    assert [b[0] for b in code_blocks(answer)] == ["c", "python"]
    r = shield.scan_output(answer)
    assert r.treatment == "block" and r.issues[0].cwe_id == "CWE-242" and r.issues[0].line == 7
    assert shield.scan_output("No code here, just words about os.system.").treatment == "ignore"


def test_cli(shield, tmp_path):
    f = tmp_path / "bad.py"
    f.write_text(INSECURE[0][1])
    run = [sys.executable, "-m", "herd", "code-shield"]
    out = subprocess.run(run + [str(f)], capture_output=True, text=True, check=True).stdout
    d = json.loads(out)
    assert d["treatment"] == "warn" and d["issues"][0]["cwe_id"] == "CWE-78" and d["issues"][0]["line"] == 2
    p = subprocess.run(run + ["-", "--language", "c"], input=INSECURE[6][1], capture_output=True, text=True)
    assert json.loads(p.stdout)["treatment"] == "block"
    p = subprocess.run(run + [str(tmp_path / "missing.py")], capture_output=True, text=True)
    assert p.returncode == 2 and "not found" in p.stderr and "Traceback" not in p.stderr
