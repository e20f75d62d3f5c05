"""Context and action features of the learning policies.

:class:`ContextFeaturizer` turns a query (text, slots, user, time) into namespaces
``{"query": {...}, "slots": {...}, "time": {...}, "user": {...}}`` of features whose
values are floats (numeric) or strings (categorical, one-hot). The same namespaces
feed Vowpal Wabbit (:func:`vw_line`) and the pure-Python baselines (:func:`context_key`),
and are logged with each decision (``Action.features``) so learning later — online or
from a log — sees exactly what the decision saw.

Learned from feedback (and persisted by the policy): :class:`UserHistory` (per user,
engagements and top catalog tags played) and :class:`ArmYield` (per arm, an EWMA of
"this arm proposed the entity the user engaged with").
"""

from __future__ import annotations

import re
import time
import unicodedata
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field, field_validator

from ltrr.components import Params
from ltrr.timestamps import parse_timestamp, problem
from ltrr.types import PolicyContext

FeatureGroup = Literal["query", "text", "slots", "evidence", "time", "user"]
Namespaces = dict[str, dict[str, Any]]

#: One-letter VW namespace of each feature group (VW interacts namespaces by first letter).
VW_NAMESPACE = {"query": "Q", "text": "W", "slots": "S", "evidence": "E", "time": "T",
                "user": "U", "action": "A", "yield": "Y"}

_WORD = re.compile(r"\w+", re.UNICODE)
#: The default "like X" cue: the query starts by asking for things like something else.
#: Domain words ("artists like", "movies similar to") belong in the spec's `like_cue`.
LIKE_CUE = r"^(?:like|similar to)\s+\S"
_VW_BAD = re.compile(r"[\s:|]+")


class FeatureParams(Params):
    """Params shared by the learning policies: which context features they see."""

    features: list[FeatureGroup] = Field(default_factory=lambda: ["query", "slots"],
                                         description=(
        "Context feature groups: query (length bucket, digits, 'like X' cue, script), text "
        "(the query's words, word pairs and character n-grams, hashed by the learner: cue "
        "phrases are learned from feedback, not listed; for vw, not tabular policies), "
        "slots (per slot name: present, exact or fuzzy, count, the type of the entity it "
        "names in a typed catalog; coverage of the query), "
        "evidence (each arm's cheap signals of how well it can answer this query, asked "
        "before allocating: e.g. the memory knows the query and how confidently, the "
        "dense index's best similarity), "
        "time (hour bucket, weekday, weekend, holiday), user (engagement bucket, top tags "
        "played, learned from feedback)."))
    evidence_arms: list[str] | None = Field(None, description=(
        "evidence group: the arms asked (default: every arm that gives evidence). Each "
        "is asked for every query, whatever it is then allocated: leave out arms whose "
        "evidence costs much (the dense arm encodes the query even if it gets 0)."))
    char_ngrams: int = Field(3, ge=0, le=6, description=(
        "text group: length of the character n-grams of each word (with word boundaries "
        "marked); 0: none."))
    word_pairs: bool = Field(True, description=(
        "text group: adjacent word pairs as well as single words."))
    user_tags: str | None = Field(None, description=(
        "Catalog list column whose values make the user's 'top tags played' features (e.g. "
        "tags); without it the user group has only the engagement bucket."))
    top_tags: int = Field(3, ge=0, le=20, description="How many top tags describe a user.")
    holidays: str | None = Field(None, description=(
        "Country code for the time group's holiday flag (needs the `holidays` package; "
        "without it, or unset, holiday is not a feature)."))
    like_cue: str = Field(LIKE_CUE, min_length=1, description=(
        "Regular expression (case-insensitive, searched in the trimmed query) that marks a "
        "'like X' query in the query group; the default knows only a leading 'like' or "
        "'similar to': name your domain's wordings (e.g. `^(?:movies|films)\\s+like\\s`)."))
    yield_alpha: float = Field(0.05, gt=0, le=1, description=(
        "EWMA rate of each arm's recent yield (share of its engaged decisions where it "
        "proposed the engaged entity)."))

    @field_validator("like_cue")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value


def _bucket(n: int, edges: tuple[int, ...]) -> str:
    for lo, hi in zip(edges, edges[1:]):
        if n < hi:
            return str(lo) if hi - lo == 1 else f"{lo}-{hi - 1}"
    return f"{edges[-1]}+"


def _script(text: str) -> str:
    """The dominant writing system of the text (a cheap stand-in for its language)."""
    if text.isascii():
        return "ascii"
    counts: dict[str, int] = {}
    for ch in text:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            s = ("latin" if name.startswith("LATIN") else "cyrillic" if name.startswith("CYRILLIC")
                 else "greek" if name.startswith("GREEK")
                 else "cjk" if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))
                 else "other")
            counts[s] = counts.get(s, 0) + 1
    return max(counts, key=counts.get) if counts else "ascii"


class UserHistory:
    """Per-user aggregates learned from feedback: engagements and tag counts."""

    MAX_TAGS = 50    # tags kept per user (the least counted are dropped)

    def __init__(self, top_tags: int = 3):
        self.top_tags = top_tags
        self.engaged: dict[str, int] = {}
        self.tags: dict[str, dict[str, float]] = {}
        self._top: dict[str, list[str]] = {}

    def update(self, user: str, entity_tags: list[str] | None) -> None:
        """Count one positive engagement of ``user`` with an entity carrying these tags."""
        self.engaged[user] = self.engaged.get(user, 0) + 1
        if entity_tags:
            counts = self.tags.setdefault(user, {})
            for t in entity_tags:
                counts[t] = counts.get(t, 0.0) + 1.0
            if len(counts) > self.MAX_TAGS:
                keep = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: self.MAX_TAGS]
                self.tags[user] = dict(keep)
            self._top.pop(user, None)

    def top(self, user: str) -> list[str]:
        top = self._top.get(user)
        if top is None:
            counts = self.tags.get(user, {})
            top = [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                   [: self.top_tags]]
            self._top[user] = top
        return top

    def features(self, user: str | None) -> dict[str, Any]:
        if not user:
            return {"known": "anonymous"}
        n = self.engaged.get(user, 0)
        out: dict[str, Any] = {"engaged": _bucket(n, (0, 1, 5, 20, 100))}
        for t in self.top(user):
            out[f"tag={t}"] = 1.0
        return out

    def to_json(self) -> dict:
        return {"engaged": self.engaged, "tags": self.tags}

    def load(self, obj: dict) -> None:
        self.engaged = {str(k): int(v) for k, v in obj.get("engaged", {}).items()}
        self.tags = {str(k): dict(v) for k, v in obj.get("tags", {}).items()}
        self._top.clear()


class ArmYield:
    """Per arm, an EWMA of 'the arm proposed the entity the user engaged with'."""

    def __init__(self, alpha: float = 0.05):
        self.alpha = alpha
        self.value: dict[str, float] = {}

    def update(self, arm: str, contributed: bool) -> None:
        old = self.value.get(arm)
        x = 1.0 if contributed else 0.0
        self.value[arm] = x if old is None else old + self.alpha * (x - old)

    def snapshot(self, arms: list[str]) -> dict[str, float]:
        return {a: round(self.value[a], 4) for a in arms if a in self.value}

    def to_json(self) -> dict:
        return dict(self.value)

    def load(self, obj: dict) -> None:
        self.value = {str(k): float(v) for k, v in obj.items()}


class ContextFeaturizer:
    """Feature groups of a query, as namespaces of float or string features."""

    def __init__(self, params: FeatureParams):
        self.groups = list(dict.fromkeys(params.features))
        self._like = re.compile(params.like_cue, re.I)
        self._ngrams, self._pairs = params.char_ngrams, params.word_pairs
        self.user = UserHistory(params.top_tags)
        self._holidays = None
        if "time" in self.groups and params.holidays:
            try:
                import holidays  # optional dependency
            except ImportError:
                self._holidays = None
            else:
                self._holidays = holidays.country_holidays(params.holidays)

    def featurize(self, ctx: PolicyContext) -> Namespaces:
        """The namespaces of one query (only the configured groups)."""
        out: Namespaces = {}
        q = ctx.query
        for g in self.groups:
            if g == "query":
                out[g] = self.query_features(q.text)
            elif g == "text":
                out[g] = self.text_features(q.text)
            elif g == "slots":
                out[g] = self.slot_features(q.text, ctx.slots)
            elif g == "evidence":
                out[g] = {f"{arm}_{k}": v for arm, ev in sorted(ctx.evidence.items())
                          for k, v in ev.items()}
            elif g == "time":
                out[g] = self.time_features(parse_timestamp(q.context.get("timestamp"))
                                            if q.context else None)
            elif g == "user":
                out[g] = self.user.features(q.user_id)
        return out

    def featurize_logged(self, text: str | None, user: str | None) -> Namespaces:
        """Features of a logged decision that carries none (slots and time are unknown)."""
        out: Namespaces = {}
        if "query" in self.groups:
            out["query"] = self.query_features(text or "")
        if "text" in self.groups:
            out["text"] = self.text_features(text or "")
        if "user" in self.groups:
            out["user"] = self.user.features(user)
        return out

    def query_features(self, text: str) -> dict[str, Any]:
        words = _WORD.findall(text)
        f: dict[str, Any] = {"len": _bucket(len(words), (0, 1, 2, 3, 4, 6))}
        if any(c.isdigit() for c in text):
            f["digits"] = 1.0
        if self._like.search(text.strip()):
            f["like"] = 1.0
        script = _script(text)
        if script != "ascii":
            f["script"] = script
        return f

    def text_features(self, text: str) -> dict[str, float]:
        """The query's own words as features: ``w_<word>``, ``p_<word>_<word>`` (adjacent
        pairs) and ``c_<n-gram>`` (character n-grams of ``#word#``, counted), case- and
        width-folded. Nothing here knows a domain: which words signal which allocation is
        what the learner learns."""
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        f: dict[str, float] = {}
        for w in words:
            f[f"w_{w}"] = 1.0
        if self._pairs:
            for a, b in zip(words, words[1:]):
                f[f"p_{a}_{b}"] = 1.0
        n = self._ngrams
        if n:
            for w in words:
                padded = f"#{w}#"
                for i in range(max(1, len(padded) - n + 1)):
                    key = f"c_{padded[i:i + n]}"
                    f[key] = f.get(key, 0.0) + 1.0
        return f

    @staticmethod
    def slot_features(text: str, slots) -> dict[str, Any]:
        f: dict[str, Any] = {}
        covered = [False] * len(text)
        for s in slots:
            f[f"{s.name}"] = 1.0
            kind = "exact" if s.score >= 1.0 else "fuzzy"
            f[f"{s.name}_{kind}"] = 1.0
            f[f"{s.name}_n"] = f.get(f"{s.name}_n", 0.0) + 1.0
            if s.entity_type is not None:          # a typed catalog: the entity's type
                f[f"{s.name}_{kind}_{s.entity_type}"] = 1.0
            for i in range(max(0, s.start), min(len(text), s.end)):
                covered[i] = True
        if not slots:
            f["none"] = 1.0
        else:
            letters = [c for c, ch in zip(covered, text) if not ch.isspace()]
            cov = sum(letters) / len(letters) if letters else 0.0
            f["coverage"] = "full" if cov >= 0.99 else "most" if cov >= 0.6 else "part"
        return f

    def time_features(self, ts: float | None) -> dict[str, Any]:
        """Hour bucket, weekday, weekend, holiday of ``ts`` (epoch seconds); the clock's
        when ``ts`` is None or not a time a date can show (NaN, 1e300, before 1970):
        never raises, whatever float the request context carried."""
        if ts is None or problem(ts, max_future=None) is not None:
            ts = time.time()
        dt = datetime.fromtimestamp(ts, tz=timezone.utc)
        h = dt.hour
        f: dict[str, Any] = {
            "hour": "night" if h < 6 else "morning" if h < 12 else "afternoon" if h < 18
            else "evening",
            "weekday": str(dt.weekday()),
        }
        if dt.weekday() >= 5:
            f["weekend"] = 1.0
        if self._holidays is not None and dt.date() in self._holidays:
            f["holiday"] = 1.0
        return f


def context_key(ns: Namespaces) -> str:
    """A compact, order-independent key of the namespaces (for tabular policies)."""
    parts = []
    for g in sorted(ns):
        for k in sorted(ns[g]):
            v = ns[g][k]
            parts.append(f"{g}.{k}={v}" if isinstance(v, str)
                         else f"{g}.{k}" if v == 1.0 else f"{g}.{k}:{v:g}")
    return "|".join(parts)


def _vw_name(s: str) -> str:
    return _VW_BAD.sub("_", s)


def vw_features(feats: dict[str, Any]) -> str:
    """``name:value`` / ``name=value`` tokens of one namespace, escaped for VW text."""
    toks = []
    for k, v in feats.items():
        if isinstance(v, str):
            toks.append(f"{_vw_name(k)}={_vw_name(v)}")
        elif v == 1.0:
            toks.append(_vw_name(k))
        else:
            toks.append(f"{_vw_name(k)}:{float(v):.6g}")
    return " ".join(toks)


def vw_shared_line(ns: Namespaces) -> str:
    """The ``shared |Q ... |S ...`` line of a context."""
    parts = ["shared"]
    for g, feats in ns.items():
        letter = VW_NAMESPACE.get(g)
        if letter and letter not in "AY" and feats:
            parts.append(f"|{letter} {vw_features(feats)}")
    if len(parts) == 1:
        parts.append("|Q const")
    return " ".join(parts)


def action_features(allocation: dict[str, int], budget: int,
                    yields: dict[str, float]) -> dict[str, dict[str, float]]:
    """Features of one action: arms included, their shares, their recent yield."""
    a: dict[str, float] = {}
    y: dict[str, float] = {}
    for arm, k in allocation.items():
        share = k / budget
        a[f"in_{arm}"] = 1.0
        a[f"share_{arm}"] = share
        if arm in yields:
            y[arm] = yields[arm] * share
    return {"action": a, "yield": y}


def vw_action_line(key: str, allocation: dict[str, int], budget: int,
                   yields: dict[str, float]) -> str:
    """The ``|A ... |Y ...`` line of one action (``key`` makes a per-action indicator)."""
    f = action_features(allocation, budget, yields)
    line = f"|A act={_vw_name(key)} {vw_features(f['action'])}"
    if f["yield"]:
        line += f" |Y {vw_features(f['yield'])}"
    return line
