"""The key schema lives in `pipeline/wire/keys.py` only: no other module spells a key, and the
ACL patterns and counter fields built from it cover the keys the roles really use."""

from __future__ import annotations

import ast
import re
from fnmatch import fnmatchcase
from pathlib import Path

from pipeline.wire.acl import machine_rules, role_rules
from pipeline.wire.keys import Counter, Keys
from tests.processes import ROOT

#: A key family followed by `:` and more key (a word, `*` or an f-string field), or anything of rq's.
KEY_LITERAL = re.compile(
    r"(?<![\w.\-])(?:rq:|charles:|(?:stream|buffer|incoming|weights|status|worker|frame|drawn|evaluation|trainer"
    r"|config|deadletter|counters|sets_routed|samples_routed|sets_dropped|recorded_sets|recorded_samples):(?=[\w*{]))"
)


def _docstrings(tree: ast.AST) -> set[int]:
    docs = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            docs.add(id(body[0].value))
    return docs


def key_literals(path: Path) -> list[str]:
    """`file:line: text` for every string constant (docstrings aside) that spells a key."""
    tree = ast.parse(path.read_text())
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # an f-string: its fields count as key text
            skip.update(id(v) for v in node.values)
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            text = node.value
        else:
            continue
        for line in text.splitlines():
            if KEY_LITERAL.search(line) and not line.lstrip().startswith("--"):  # Lua comments
                found.append(f"{path.name}:{node.lineno}: {line.strip()[:80]}")
    return found


def test_no_key_literal_outside_keys_module() -> None:
    sources = [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("workers/*.py"), *ROOT.glob("scripts/*.py")]
    found = [f"{path.parent.name}/{hit}" for path in sources if path != ROOT / "pipeline/wire/keys.py"
             for hit in key_literals(path)]
    assert found == [], "key names belong in pipeline/wire/keys.py:\n" + "\n".join(found)


def test_the_check_finds_a_key_literal(tmp_path: Path) -> None:
    bad = tmp_path / "probe.py"
    bad.write_text('"""Docstrings may name stream:steering."""\n\n'
                   'def f(r, name):\n    return r.llen(f"rq:queue:{name}"), r.hget("charles:counters", f"sets_routed:{name}")\n')
    assert len(key_literals(bad)) == 3


def _patterns(rules: str, sigil: str) -> list[str]:
    """Glob patterns of one kind (`~` keys, `%R~` read-only keys, `&` channels) in ACL rules."""
    return [m.group(1) for m in re.finditer(rf"(?:^|[ (]){re.escape(sigil)}(\S+?)\)?(?= |$)", rules)]


def test_acl_patterns_cover_each_roles_own_keys() -> None:
    keys = Keys("run7:")
    rules = role_rules("run7:")
    writes = {
        "collector": [keys.stream("steering", "c1"), keys.incoming("c1", "c1-9", 3), keys.presence("collector", "c1"),
                      keys.status("collector", "c1"), keys.jobs("c1")],
        "player": [keys.presence("player", "p1"), keys.status("player", "p1"), keys.frame("p1", "hood"), keys.viewer("p1")],
        "trainer": [keys.buffer("steering"), keys.buffer_row("steering", "s:1"), keys.buffer_replay("steering"),
                    keys.drawn("t") + "0", keys.weights_latest, keys.weights_version_blob(3), keys.loss_history,
                    keys.counters, keys.presence("trainer", "t1"), keys.status("trainer", "t1")],
    }
    for role, names in writes.items():
        patterns = _patterns(rules[role], "~")
        for name in names:
            assert any(fnmatchcase(name, p) for p in patterns), (role, name, patterns)
    # what a role may only read stays out of its writable patterns
    assert not any(fnmatchcase(keys.config, p) for p in _patterns(rules["collector"], "~"))
    assert any(fnmatchcase(keys.config, p) for p in _patterns(rules["collector"], "%R~"))
    assert not any(fnmatchcase(keys.buffer("steering"), p) for p in _patterns(rules["collector"], "~"))
    assert not any(fnmatchcase(keys.stream("steering", "c1"), p) for p in _patterns(rules["player"], "~"))
    assert _patterns(rules["player"], "&") == [keys.weights_channel, Keys("run7:", cluster=True).weights_channel]
    assert not any(p.startswith("rq:") for role in ("collector", "player") for p in _patterns(rules[role], "~"))


def test_a_machines_patterns_cover_its_own_keys_only() -> None:
    keys = Keys("run7:")
    for role, own, other in [
        ("collector", [keys.stream("steering", "alice"), keys.incoming("alice", "s1", 0), keys.jobs("alice"),
                       keys.presence("collector", "alice"), keys.status("collector", "alice")],
         [keys.stream("steering", "alice-2"), keys.stream("steering", "bob"), keys.incoming("bob", "s1", 0),
          keys.incoming("alice-2", "s1", 0), keys.jobs("bob"), keys.presence("collector", "bob"),
          keys.status("collector", "alice2")]),
        ("player", [keys.presence("player", "alice"), keys.status("player", "alice"), keys.frame("alice", "hood")],
         [keys.presence("player", "bob"), keys.status("player", "alice-2"), keys.frame("bob", "hood"),
          keys.frame("alice-2", "hood")]),
    ]:
        patterns = _patterns(machine_rules(role, "alice", "run7:"), "~")
        assert all(any(fnmatchcase(k, p) for p in patterns) for k in own), (role, own, patterns)
        assert not any(fnmatchcase(k, p) for k in other for p in patterns), (role, other, patterns)


def test_counter_fields_name_their_output() -> None:
    fields = [Counter.sets_routed("a"), Counter.samples_routed("a"), Counter.sets_dropped("a"),
              Counter.recorded_sets("a"), Counter.recorded_samples("a")]
    assert len(set(fields)) == len(fields)
    assert all(f.endswith(":a") for f in fields)
    assert Counter.sets_routed("a") != Counter.sets_routed("b")
