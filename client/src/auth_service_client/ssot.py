"""``ssot-check``: find the places in a Python code base that bypass the single source of truth
for tokens (this library, i.e. the auth service): JWT libraries imported, ``jwt.decode``/
``jwt.encode`` called, JWT secrets hard-coded, HMAC algorithms named. An ``ast`` walk, so
comments, docstrings and names that merely contain "jwt" are not findings."""

from __future__ import annotations

import ast
import fnmatch
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

CODES = {
    "SSOT000": "file could not be parsed",
    "SSOT001": "imports a JWT library",
    "SSOT002": "encodes or decodes a JWT itself",
    "SSOT003": "hard-codes a JWT secret",
    "SSOT004": "names an HMAC JWT algorithm",
}
JWT_MODULES = ("jwt", "pyjwt", "jose", "python_jose", "jwcrypto", "authlib.jose", "joserfc")
_CODECS = {"decode", "encode", "decode_complete"}
_HMAC = re.compile(r"HS(256|384|512)", re.IGNORECASE)
_SECRET_NAME = re.compile(  # the name ends in the secret (JWT_SECRET_PURPOSE is no secret)
    r"(JWT\w*(SECRET|KEY)|SECRET_?KEY|SIGNING_?(KEY|SECRET)|TOKEN_?SECRET|HMAC_?(SECRET|KEY))"
    r"S?(_?(VALUE|STR|BYTES|B64|HEX|PEM))?$",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+")  # "JWT_SECRET": names a variable
_ENV_GETTERS = {"getenv", "get", "setdefault", "environ.get", "environ.setdefault"}
_SKIP_DIRS = {  # as ruff's default exclude: build output, vendored and installed code
    *("__pycache__", "__pypackages__", "_build", "buck-out", "build", "dist"),
    *("node_modules", "site-packages", "venv"),
}
ALLOW_FILE = ".ssot-allow"


@dataclass(frozen=True, order=True)
class Finding:
    """One place that bypasses the source of truth."""

    path: str
    line: int
    col: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.code} {self.message}"


def is_jwt_module(name: str) -> bool:
    """``jwt``, ``jose.jwt``, ``authlib.jose``, ...: a JWT library or one of its modules."""
    return any(name == root or name.startswith(root + ".") for root in JWT_MODULES)


def _secret_value(node: ast.AST | None) -> bool:
    if not isinstance(node, ast.Constant) or not isinstance(node.value, str | bytes):
        return False
    text = node.value.decode("latin-1") if isinstance(node.value, bytes) else node.value
    return bool(text.strip()) and not _ENV_NAME.fullmatch(text)


def _target_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        key = node.slice.value
        return key if isinstance(key, str) else None
    return None


@dataclass
class _Visitor(ast.NodeVisitor):
    path: str
    findings: list[Finding] = field(default_factory=list)
    bound: dict[str, str] = field(default_factory=dict)  # local name -> JWT module path

    def add(self, node: ast.AST, code: str, detail: str) -> None:
        line, col = getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1
        self.findings.append(Finding(self.path, line, col, code, f"{CODES[code]}: {detail}"))

    # -- imports ----------------------------------------------------------------------------
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if is_jwt_module(alias.name):
                self.add(node, "SSOT001", f"import {alias.name}")
                local = alias.asname or alias.name.split(".")[0]
                self.bound[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return  # a relative import is the code base's own module
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            if is_jwt_module(node.module) or is_jwt_module(full):
                self.add(node, "SSOT001", f"from {node.module} import {alias.name}")
                self.bound[alias.asname or alias.name] = full

    # -- calls ------------------------------------------------------------------------------
    def resolve(self, node: ast.AST) -> str | None:
        """The dotted path an expression names, through the JWT imports (else None)."""
        if isinstance(node, ast.Name):
            return self.bound.get(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr}" if base else None
        if isinstance(node, ast.Call):
            base = self.resolve(node.func)
            return f"{base}()" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        target = self.resolve(node.func)
        if target and target.rsplit(".", 1)[-1] in _CODECS:
            self.add(node, "SSOT002", f"{target}(...)")
        dotted = ast.unparse(node.func)
        first = node.args[0] if node.args else None
        name = first.value if isinstance(first, ast.Constant) else None
        if isinstance(name, str):
            if dotted in {"importlib.import_module", "import_module", "__import__"}:
                if is_jwt_module(name):
                    self.add(node, "SSOT001", f"{dotted}({name!r})")
            elif dotted.split(".", 1)[-1] in _ENV_GETTERS and _SECRET_NAME.search(name):
                default = node.args[1] if len(node.args) > 1 else None
                if _secret_value(default):
                    self.add(node, "SSOT003", f"a literal default for {name}")
        for keyword in node.keywords:
            if keyword.arg and _SECRET_NAME.search(keyword.arg) and _secret_value(keyword.value):
                self.add(keyword.value, "SSOT003", f"{keyword.arg}=...")
        self.generic_visit(node)

    # -- secrets ----------------------------------------------------------------------------
    def _assigned(self, targets: Iterable[ast.AST], value: ast.AST | None) -> None:
        for target in targets:
            name = _target_name(target)
            if name and _SECRET_NAME.search(name) and _secret_value(value):
                self.add(target, "SSOT003", f"{name} = ...")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assigned(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._assigned([node.target], node.value)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            name = key.value if isinstance(key, ast.Constant) else None
            if isinstance(name, str) and _SECRET_NAME.search(name) and _secret_value(value):
                self.add(value, "SSOT003", f"{name!r}: ...")
        self.generic_visit(node)

    def visit_arguments(self, node: ast.arguments) -> None:
        positional = [*node.posonlyargs, *node.args]
        defaulted = positional[len(positional) - len(node.defaults) :]
        pairs = [*zip(defaulted, node.defaults, strict=True)]
        pairs += [(a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d]
        for arg, default in pairs:
            if _SECRET_NAME.search(arg.arg) and _secret_value(default):
                self.add(default, "SSOT003", f"{arg.arg}=... (a default)")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and _HMAC.fullmatch(node.value):
            self.add(node, "SSOT004", repr(node.value))


def check_source(source: bytes | str, path: str) -> list[Finding]:
    """The findings of one file's source (SSOT000 when it does not parse)."""
    try:
        tree = ast.parse(source, filename=path)
    except (SyntaxError, ValueError) as exc:  # ValueError: null bytes
        line = getattr(exc, "lineno", None) or 1
        return [Finding(path, line, 1, "SSOT000", f"{CODES['SSOT000']}: {exc}")]
    visitor = _Visitor(path)
    for node in ast.walk(tree):  # the imports first: a call may precede a late import
        if isinstance(node, ast.Import | ast.ImportFrom):
            visitor.visit(node)
    visitor.findings.clear()
    visitor.visit(tree)
    return sorted(set(visitor.findings))


def python_files(root: Path) -> Iterator[Path]:
    """``root`` itself if a file, else every ``.py`` below it, skipping hidden directories,
    virtualenvs (a ``pyvenv.cfg``) and ``_SKIP_DIRS`` (``build``, ``site-packages``, ...)."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(
            d
            for d in dirnames
            if not d.startswith(".")
            and d not in _SKIP_DIRS
            and not (here / d / "pyvenv.cfg").exists()
        )
        yield from (here / f for f in sorted(filenames) if f.endswith(".py"))


def check_paths(paths: Sequence[Path]) -> list[Finding]:
    """Every finding under ``paths``."""
    findings: list[Finding] = []
    for root in paths:
        for path in python_files(root):
            try:
                source = path.read_bytes()
            except OSError as exc:
                findings.append(Finding(str(path), 1, 1, "SSOT000", f"unreadable: {exc}"))
                continue
            findings.extend(check_source(source, str(path)))
    return findings


@dataclass(frozen=True)
class AllowEntry:
    """``pattern[:line] [CODE ...]``: ``pattern`` is an fnmatch glob (``*`` also matches
    ``/``) over the path relative to the allow-list's directory."""

    pattern: str
    line: int | None
    codes: frozenset[str]

    def allows(self, relative: str, finding: Finding) -> bool:
        return (
            fnmatch.fnmatchcase(relative, self.pattern)
            and self.line in (None, finding.line)
            and (not self.codes or finding.code in self.codes)
        )


class AllowListError(ValueError):
    """A line of the allow-list that is not ``path[:line] [CODE ...]``."""


@dataclass
class AllowList:
    """The exceptions: entries whose paths are relative to ``base``."""

    base: Path
    entries: list[AllowEntry]

    @classmethod
    def read(cls, file: Path) -> AllowList:
        entries = []
        for number, raw in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            pattern, line = words[0], None
            head, sep, tail = pattern.rpartition(":")
            if sep and tail.isdigit():
                pattern, line = head, int(tail)
            unknown = [code for code in words[1:] if code not in CODES]
            if unknown or not pattern:
                raise AllowListError(f"{file}:{number}: expected `path[:line] [CODE ...]`")
            entries.append(AllowEntry(pattern.removeprefix("./"), line, frozenset(words[1:])))
        return cls(file.resolve().parent, entries)

    def allows(self, finding: Finding) -> bool:
        path = Path(finding.path).resolve()
        relative = path.relative_to(self.base).as_posix() if path.is_relative_to(self.base) else (
            Path(finding.path).as_posix()
        )  # fmt: skip
        return any(entry.allows(relative, finding) for entry in self.entries)
