"""A small PromQL parser for the tests: enough of the grammar for dashboards (selectors,
ranges, functions, aggregations with by/without, binary operators with bool/on/
ignoring/group_*), strict about the rest. It answers what a query reads: each metric
with the labels it matches on, and each aggregation's grouping labels with the metrics
under it. Grafana's variables ($job, $__rate_interval) are taken as they are written."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FUNCTIONS = frozenset(
    {
        "abs", "absent", "avg_over_time", "ceil", "changes", "clamp_max", "clamp_min",
        "count_over_time", "delta", "deriv", "exp", "floor", "histogram_quantile", "idelta",
        "increase", "irate", "label_replace", "ln", "max_over_time", "min_over_time",
        "predict_linear", "rate", "resets", "round", "scalar", "sort", "sort_desc",
        "sum_over_time", "time", "timestamp", "vector",
    }
)  # fmt: skip
AGGREGATIONS = frozenset(
    {"sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
     "count_values", "group"}
)  # fmt: skip
_BINARY = ("==", "!=", ">=", "<=", ">", "<", "+", "-", "*", "/", "%", "^")
_SET_OPS = frozenset({"and", "or", "unless"})
_TOKEN = re.compile(
    r"""\s*(?:
    (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<range>\[[^\]]*\])
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=(){},])
    )""",
    re.VERBOSE,
)
_DURATION = re.compile(r"^\[\s*(\$\w+|\d+[smhdwy])(\s*:\s*(\$\w+|\d+[smhdwy])?)?\s*\]$")


class PromQLError(ValueError):
    pass


@dataclass
class Query:
    selectors: list[tuple[str, set[str]]] = field(default_factory=list)  # metric, matched labels
    groupings: list[tuple[set[str], set[str]]] = field(default_factory=list)  # labels, metrics

    @property
    def metrics(self) -> set[str]:
        return {m for m, _ in self.selectors}


def tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            raise PromQLError(f"cannot read {text[pos : pos + 20]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = tokens(text)
        self.i = 0
        self.q = Query()

    def peek(self, value: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        return value is None or self.toks[self.i][1] == value

    def take(self, value: str | None = None) -> tuple[str, str]:
        if self.i >= len(self.toks):
            raise PromQLError(f"the query ends where {value or 'more'} was due")
        tok = self.toks[self.i]
        if value is not None and tok[1] != value:
            raise PromQLError(f"{value!r} expected, found {tok[1]!r}")
        self.i += 1
        return tok

    def parse(self) -> Query:
        self.expr()
        if self.i != len(self.toks):
            raise PromQLError(f"unexpected {self.toks[self.i][1]!r}")
        return self.q

    def expr(self) -> set[str]:
        """An expression; returns the metrics it reads."""
        metrics = self.unary()
        while self.peek() and (self.toks[self.i][1] in _BINARY or self.toks[self.i][1] in _SET_OPS):
            self.take()
            if self.peek("bool"):
                self.take()
            for word in ("on", "ignoring", "group_left", "group_right"):
                if self.peek(word):
                    self.take()
                    if self.peek("("):
                        self.labels()
            metrics |= self.unary()
        return metrics

    def unary(self) -> set[str]:
        if self.peek("-") or self.peek("+"):
            self.take()
        metrics = self.primary()
        if self.peek() and self.toks[self.i][0] == "range":
            window = self.take()[1]
            if not _DURATION.match(window):
                raise PromQLError(f"bad range {window!r}")
        return metrics

    def primary(self) -> set[str]:
        kind, value = self.take()
        if kind in ("number", "string"):
            return set()
        if value == "(":
            metrics = self.expr()
            self.take(")")
            return metrics
        if value == "{":
            raise PromQLError("a selector without a metric name")
        if kind != "ident":
            raise PromQLError(f"unexpected {value!r}")
        if value in AGGREGATIONS:
            return self.aggregation()
        if self.peek("("):
            if value not in FUNCTIONS:
                raise PromQLError(f"unknown function {value!r}")
            return self.call()
        matched = self.matchers() if self.peek("{") else set()
        self.q.selectors.append((value, matched))
        return {value}

    def aggregation(self) -> set[str]:
        grouping: set[str] = set()
        if self.peek("by") or self.peek("without"):
            self.take()
            grouping = self.labels()
        metrics = self.call()
        if self.peek("by") or self.peek("without"):
            self.take()
            grouping = self.labels()
        if grouping:
            self.q.groupings.append((grouping, metrics))
        return metrics

    def call(self) -> set[str]:
        self.take("(")
        metrics: set[str] = set()
        if not self.peek(")"):
            metrics |= self.expr()
            while self.peek(","):
                self.take()
                metrics |= self.expr()
        self.take(")")
        return metrics

    def labels(self) -> set[str]:
        self.take("(")
        out: set[str] = set()
        while not self.peek(")"):
            kind, value = self.take()
            if kind != "ident":
                raise PromQLError(f"a label name expected, found {value!r}")
            out.add(value)
            if not self.peek(")"):
                self.take(",")
        self.take(")")
        return out

    def matchers(self) -> set[str]:
        """``{name op "value", …}``: the label names matched on."""
        self.take("{")
        out: set[str] = set()
        while not self.peek("}"):
            kind, name = self.take()
            if kind != "ident":
                raise PromQLError(f"a label name expected, found {name!r}")
            op = self.take()[1]
            if op not in ("=", "!=", "=~", "!~"):
                raise PromQLError(f"a label matcher expected, found {op!r}")
            if self.take()[0] != "string":
                raise PromQLError(f"label {name!r} must be matched against a string")
            out.add(name)
            if not self.peek("}"):
                self.take(",")
        self.take("}")
        return out


def parse(text: str) -> Query:
    """What the PromQL expression ``text`` reads; PromQLError if it is not one."""
    return _Parser(text).parse()


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")


def parse_variable(text: str) -> Query:
    """A Grafana query variable: ``label_values(SELECTOR, label)``."""
    m = _LABEL_VALUES.match(text.strip())
    if m is None:
        raise PromQLError(f"not a label_values() query: {text!r}")
    q = parse(m.group("selector"))
    q.groupings.append(({m.group("label")}, q.metrics))
    return q
