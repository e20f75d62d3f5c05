"""A model of how people search a catalog: typed queries for a target entity.

Written for the Last.fm artists (:meth:`QueryModel.from_dir`, whose words below are
Last.fm's); any catalog with an interactions file gets the same six types from its own
columns (:meth:`QueryModel.from_interactions`: titles for names, attribute values for
tags, co-occurrence in users' interactions for "like", neutral wordings).

Given a *target* artist (the one the user wants) and a seeded ``numpy.random.Generator``,
:class:`QueryModel` writes a query of one of six types, each aimed at a different retrieval
arm:

============== ======================================================= =====================
type           text                                                     arm it favours
============== ======================================================= =====================
``exact``      the name (lowercased half the time)                      lexical, entity lookup
``misspelled`` the name with 1–2 typos (deletion, transposition,        fuzzy entity lookup
               neighbouring-key substitution, doubled letter)
``partial``    a distinctive word span of a multi-word name, or a       lexical / prefix
               prefix ("chili peppers", "metall")
``tag``        one of the target's descriptive tags, shared by at most  tag / lexical
               ``max_tag_artists`` artists
``like``       "like <X>", "similar to <X>", "<X> radio", ... where X   graph expansion
               is co-listened with the target (plays.parquet)
``vague``      2–3 of the target's tags with filler words               dense / semantic
               ("some 90s female vocalists pop music")
============== ======================================================= =====================

Users and targets come from ``plays.parquet``: :meth:`QueryModel.sample_target` draws an
artist in proportion to the user's play counts. Everything random goes through the
generator passed in, and nothing depends on hash order, so a seed fixes the output.
Per-artist work (candidate spans, tags, co-listened neighbours) is computed once and cached.

Kept whole: one class, :class:`QueryModel`, whose six query-type generators share its
indexes (names, tags, co-listening, typo neighbours) and one discipline for random draws
(every draw from the generator passed in, so a seed fixes a run); split apart they would
pass those indexes around.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ltrr.errors import RunError
from ltrr.files import check_file
from ltrr.text import normalize

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

QUERY_TYPES = ("exact", "misspelled", "partial", "tag", "like", "vague")

#: A plausible default mix: mostly navigational, some exploratory.
DEFAULT_MIX = {"exact": 0.30, "misspelled": 0.15, "partial": 0.15, "tag": 0.10,
               "like": 0.15, "vague": 0.15}


# Words that never make a "distinctive part" of a name on their own, nor start or end one.
_STOPWORDS = frozenset(
    "the a an and of & feat ft featuring vs with in on to for at by from de la le les los el "
    "y e da do der die das und et".split())

# Tags that say how a user feels about an artist, not what the artist is: no one searches
# for them to find an artist (Last.fm's "seen live", "favorites", ...).
LASTFM_PERSONAL_TAGS = frozenset([
    "seen live", "love", "loved", "sexy", "beautiful", "amazing", "awesome", "awesome-ness",
    "favorite", "favorites", "favourite", "favourites", "my favorite", "epic", "legend",
    "hot", "<3", "cool", "cute", "perfect", "perfection", "genius", "lol", "icon", "idol",
    "guilty pleasure", "love at first listen", "fucking awesome", "brilliant", "best",
    "the best", "check", "check out", "mix", "remix", "live", "unreleased", "b-side",
    "cover", "covers", "classic", "albums i own", "favorite songs", "favorite artists",
    "good", "great", "fun", "sweet", "wish list", "to check out", "spotify", "lastfm",
])

LASTFM_LIKE_TEMPLATES = ("like {x}", "similar to {x}", "{x} radio", "artists like {x}",
                         "bands like {x}", "{x} similar artists", "music like {x}",
                         "sounds like {x}")
LASTFM_VAGUE_TEMPLATES = ("{t}", "some {t} music", "{t} bands", "{t} artists",
                          "something {t}", "looking for {t}", "best {t} artists",
                          "{t} stuff", "{t} songs", "recommend me {t} music")
#: Wordings that name no domain (any catalog): ``{x}`` an entity's title, ``{t}`` attributes.
LIKE_TEMPLATES = ("like {x}", "similar to {x}", "something like {x}", "more like {x}",
                  "{x} similar", "{x} alternatives", "in the style of {x}", "{x} and similar")
VAGUE_TEMPLATES = ("{t}", "some {t}", "something {t}", "looking for {t}", "best {t}",
                   "good {t}", "{t} recommendations")

# QWERTY key positions (row, column with the rows' stagger) for neighbouring-key typos.
_ROWS = (("qwertyuiop", 0.0), ("asdfghjkl", 0.3), ("zxcvbnm", 0.8))
_POS = {ch: (r, i + off) for r, (keys, off) in enumerate(_ROWS) for i, ch in enumerate(keys)}
KEY_NEIGHBOURS = {a: "".join(b for b, (rb, xb) in _POS.items()
                             if b != a and math.hypot(ra - rb, xa - xb) < 1.3)
                  for a, (ra, xa) in _POS.items()}
_TYPOS = ("delete", "transpose", "substitute", "double")
_TYPO_P = (0.3, 0.2, 0.3, 0.2)


@dataclass(frozen=True, slots=True)
class SimQuery:
    """One generated query: its text and type, the target artist, and what it was made from."""

    text: str
    type: str
    target: str                       # artist_id the user is looking for
    anchor: str | None = None         # ``like``: the artist_id named in the text
    tags: tuple[str, ...] = ()        # ``tag`` / ``vague``: the tags used
    user_id: str | None = None        # set by :meth:`QueryModel.sample`


class QueryModel:
    """Typed search queries (exact, misspelled, partial, tag, like, vague) for target artists.

    ``artists`` needs ``artist_id``, ``name``, ``tags`` (list); ``plays`` needs ``user_id``,
    ``artist_id``, ``plays``; ``tag_assignments`` needs ``user_id``, ``artist_id``, ``tag``.

    Findability knobs: a ``tag`` query's tag, and a ``vague`` query's tags together, are
    carried by at most ``max_tag_artists`` artists; tags count as descriptive when at least
    ``min_tag_users`` users use them; a ``partial`` span or prefix matches at most
    ``max_partial_matches`` names; a ``like`` query names one of the target's
    ``like_neighbours`` most co-listened artists (≥ ``min_co_listeners`` shared listeners),
    for which the target ranks within ``max_like_rank``; a tag equal to the name of an artist
    with ``name_tag_listeners`` or more listeners is a name, not a description; a tag in
    ``personal_tags`` says how someone feels, not what the entity is, and is never used.
    ``like_templates`` (``{x}``: the anchor's name) and ``vague_templates`` (``{t}``: the
    tags) word the ``like`` and ``vague`` queries.
    """

    def __init__(self, artists: pl.DataFrame, plays: pl.DataFrame,
                 tag_assignments: pl.DataFrame, *, max_tag_artists: int = 100,
                 min_tag_users: int = 5, max_partial_matches: int = 5,
                 like_neighbours: int = 20, max_like_rank: int = 100,
                 min_co_listeners: int = 2, name_tag_listeners: int = 25,
                 personal_tags: frozenset[str] = frozenset(),
                 like_templates: tuple[str, ...] = LIKE_TEMPLATES,
                 vague_templates: tuple[str, ...] = VAGUE_TEMPLATES) -> None:
        import numpy as np
        import polars as pl

        for frame, what, cols in ((artists, "artists", ("artist_id", "name", "tags")),
                                  (plays, "plays", ("user_id", "artist_id", "plays")),
                                  (tag_assignments, "tag_assignments",
                                   ("user_id", "artist_id", "tag"))):
            missing = [c for c in cols if c not in frame.columns]
            if missing:
                raise RunError(f"{what} has no column {', '.join(repr(c) for c in missing)}",
                               field=what, hint=f"expected columns: {', '.join(cols)}")
        self.max_tag_artists = max_tag_artists
        self.max_partial_matches = max_partial_matches
        self.like_neighbours = like_neighbours
        self.max_like_rank = max_like_rank
        self.min_co_listeners = min_co_listeners
        for templates, slot in ((like_templates, "{x}"), (vague_templates, "{t}")):
            if not templates or any(slot not in t for t in templates):
                raise ValueError(f"templates {list(templates)} must each contain {slot}")
        self._like_templates = tuple(like_templates)
        self._vague_templates = tuple(vague_templates)

        self.ids: list[str] = [str(x) for x in artists["artist_id"].to_list()]
        self.index = {a: i for i, a in enumerate(self.ids)}
        self.names: list[str] = [str(x or "") for x in artists["name"].to_list()]
        self.tags: list[list[str]] = [list(t or []) for t in artists["tags"].to_list()]
        self._norm = [normalize(n) for n in self.names]
        self._words = [tuple(n.split()) for n in self._norm]
        self._norm_set = set(self._norm)
        self._sorted_norm = sorted(self._norm)
        postings: dict[str, list[int]] = {}
        for i, words in enumerate(self._words):
            for w in dict.fromkeys(words):
                postings.setdefault(w, []).append(i)
        self._postings = postings

        # tags: which artists carry each tag among their top tags; which tags describe music
        tag_artists: dict[str, set[int]] = {}
        for i, ts in enumerate(self.tags):
            for t in ts:
                tag_artists.setdefault(t, set()).add(i)
        self._tag_artists = tag_artists
        known = pl.Series(self.ids, dtype=pl.String).implode()
        ta = tag_assignments.select(pl.col("user_id").cast(pl.String),
                                    pl.col("artist_id").cast(pl.String), "tag")
        users_per_tag = ta.group_by("tag").agg(pl.col("user_id").n_unique().alias("n"))
        # a tag naming a well-known artist ("lady gaga", "the beatles") is a name query in
        # disguise; one that happens to name an obscure band ("Electronic") still describes
        listeners = (plays.group_by(pl.col("artist_id").cast(pl.String))
                     .agg(pl.col("user_id").n_unique().alias("n")))
        known_names = {self._norm[self.index[a]] for a, n in listeners.iter_rows()
                       if n >= name_tag_listeners and a in self.index}
        self._descriptive = {
            t for t, n in users_per_tag.iter_rows()
            if t is not None and n >= min_tag_users and t not in personal_tags
            and normalize(t) not in known_names and not t.isdigit()
            and len(t) <= 30 and len(t.split()) <= 3}
        strength = (ta.filter(pl.col("artist_id").is_in(known))
                    .group_by("artist_id", "tag").agg(pl.col("user_id").n_unique().alias("n")))
        self._tag_users = {(a, t): n for a, t, n in strength.iter_rows()}

        # plays: per user, artists and cumulative play counts (for sample_target)
        p = (plays.select(pl.col("user_id").cast(pl.String), pl.col("artist_id").cast(pl.String),
                          pl.col("plays").cast(pl.Float64))
             .filter(pl.col("artist_id").is_in(known) & (pl.col("plays") > 0)))
        self._plays = p
        self._user_artists: dict[str, tuple[list[str], np.ndarray]] = {}
        for (user,), group in p.sort("user_id", "artist_id").group_by(
                "user_id", maintain_order=True):
            self._user_artists[user] = (group["artist_id"].to_list(),
                                        np.cumsum(group["plays"].to_numpy()))
        self.users: list[str] = sorted(self._user_artists, key=_natural)
        self.session_users: list[str] = self.users     # whom sessions come from (split)
        self._colisten = None
        self._cache: dict[tuple[int, int], object] = {}

    @classmethod
    def from_dir(cls, folder: Path | str, **params) -> QueryModel:
        """The Last.fm model: ``artists.parquet``, ``plays.parquet`` and
        ``tag_assignments.parquet`` from ``folder``, with Last.fm's wordings and personal
        tags (``params`` override them)."""
        import polars as pl

        params = {"personal_tags": LASTFM_PERSONAL_TAGS,
                  "like_templates": LASTFM_LIKE_TEMPLATES,
                  "vague_templates": LASTFM_VAGUE_TEMPLATES, **params}

        folder = Path(folder)
        frames = []
        for name in ("artists", "plays", "tag_assignments"):
            path = folder / f"{name}.parquet"
            check_file(path, f"{name}.parquet", error=RunError, where=str(folder),
                       hint="point at a folder like examples/data/lastfm/")
            frames.append(pl.read_parquet(path))
        return cls(*frames, **params)

    @classmethod
    def from_interactions(cls, entities: pl.DataFrame, interactions: pl.DataFrame,
                          **params) -> QueryModel:
        """Any catalog: ``entities`` with ``id``, ``name`` and ``tags`` (a list of attribute
        values, the most telling first), ``interactions`` with ``user``, ``entity`` and
        ``weight`` (> 0; a target is drawn in proportion to it). Without users' own tags,
        an attribute value counts as descriptive whatever number of users (``min_tag_users``
        1) and every value weighs the same."""
        import polars as pl

        entities = entities.select(pl.col("id").cast(pl.String).alias("artist_id"),
                                   pl.col("name"), pl.col("tags"))
        assigned = (entities.select("artist_id", "tags").explode("tags")
                    .drop_nulls("tags").rename({"tags": "tag"})
                    .with_columns(user_id=pl.lit("")))
        plays = interactions.select(pl.col("user").cast(pl.String).alias("user_id"),
                                    pl.col("entity").cast(pl.String).alias("artist_id"),
                                    pl.col("weight").cast(pl.Float64).alias("plays"))
        return cls(entities, plays, assigned, **{"min_tag_users": 1, **params})

    # --- the held-out protocol ---------------------------------------------------------------

    def split(self, part: str) -> None:
        """Keep one half of the users and of the like/vague wordings: ``tuning`` or
        ``held-out`` (``all``: everything). Halves are fixed by a hash of each user id or
        wording, so a feature or setting chosen on ``tuning`` is measured on users and
        wordings it never saw."""
        if part == "all":
            return
        if part not in ("tuning", "held-out"):
            raise ValueError(f"unknown split part {part!r} (all, tuning, held-out)")
        side = part == "held-out"
        users = [u for u in self.users if held_out(u) == side]   # co-listening keeps all
        if not users:
            raise RunError(f"no user falls in the {part} half", field="split",
                           hint="a split needs at least two users")
        self.session_users = users
        self._like_templates = half(self._like_templates, side)
        self._vague_templates = half(self._vague_templates, side)

    # --- sampling ---------------------------------------------------------------------------

    @staticmethod
    def sample_type(rng: np.random.Generator, mix: dict[str, float] | None = None) -> str:
        """A query type drawn from ``mix`` (type → weight; default :data:`DEFAULT_MIX`)."""
        types, weights = _mix(mix)
        return types[draw(rng, weights)]

    def sample_user(self, rng: np.random.Generator) -> str:
        """A user of ``plays.parquet`` (of the split's half), uniformly."""
        users = self.session_users
        return users[int(rng.integers(len(users)))]

    def sample_target(self, user: str, rng: np.random.Generator) -> str:
        """An artist ``user`` plays, drawn in proportion to the user's play counts."""
        try:
            artists, cum = self._user_artists[str(user)]
        except KeyError:
            raise RunError(f"unknown user '{user}'", field="user",
                           hint="users are the user_id values of plays.parquet") from None
        i = int(cum.searchsorted(rng.random() * cum[-1], side="right"))
        return artists[min(i, len(artists) - 1)]

    def sample(self, rng: np.random.Generator, *, user: str | None = None,
               mix: dict[str, float] | None = None, qtype: str | None = None,
               max_tries: int = 100) -> SimQuery:
        """A user (given or uniform), a target ∝ their plays and a query for it.

        With ``qtype`` fixed, targets are redrawn until one can carry that type; otherwise the
        type is drawn from ``mix`` among the types the target can carry.
        """
        types, weights = _mix(mix if qtype is None else {_check_type(qtype): 1.0})
        for _ in range(max_tries):
            who = user if user is not None else self.sample_user(rng)
            target = self.sample_target(who, rng)
            # draw a type; if the target cannot carry it, drop it and draw again: the type
            # ends up ∝ its weight among the target's feasible types, and only the types
            # drawn are worked out for this target
            left = [(t, w) for t, w in zip(types, weights) if w > 0]
            while left:
                k = draw(rng, [w for _, w in left])
                q = self.query(target, left[k][0], rng)
                if q is not None:
                    return SimQuery(q.text, q.type, q.target, q.anchor, q.tags, who)
                del left[k]
        raise RunError(f"no target of {'user ' + repr(user) if user else 'any user'} could "
                       f"carry a query of type(s) {', '.join(types)} in {max_tries} tries",
                       hint="allow more query types in the mix, or another user")

    # --- queries ----------------------------------------------------------------------------

    def feasible(self, target: str, qtype: str) -> bool:
        """Whether ``target`` can carry a query of ``qtype`` (e.g. ``like`` needs neighbours)."""
        i = self._row(target)
        t = _check_type(qtype)
        if t == "exact":
            return bool(self._norm[i])
        if t == "misspelled":
            return bool(self._typo_positions(self.names[i].lower()))
        if t == "partial":
            return bool(self._partials(i)[0] or self._partials(i)[1])
        if t == "tag":
            return bool(self._tag_choices(i)[0])
        if t == "like":
            return bool(self._anchors(i)[0])
        return bool(self._vague_choices(i)[0])

    def descriptive_tags(self, target: str) -> list[str]:
        """The target's descriptive tags, strongest first (none echoing its name)."""
        return self._artist_tags(self._row(target))

    def feasible_types(self, target: str) -> tuple[str, ...]:
        """The query types ``target`` can carry."""
        return tuple(t for t in QUERY_TYPES if self.feasible(target, t))

    def query(self, target: str, qtype: str, rng: np.random.Generator) -> SimQuery | None:
        """A query of ``qtype`` for ``target``, or None if the target cannot carry that type."""
        i = self._row(target)
        t = _check_type(qtype)
        return getattr(self, f"_{t}")(i, rng)

    def _exact(self, i: int, rng) -> SimQuery | None:
        name = self.names[i]
        if not self._norm[i]:
            return None
        return SimQuery(name.lower() if rng.random() < 0.5 else name, "exact", self.ids[i])

    def _misspelled(self, i: int, rng) -> SimQuery | None:
        base = self.names[i].lower()
        positions = self._typo_positions(base)
        if not positions:
            return None
        n_typos = 2 if len(positions) >= 8 and rng.random() < 0.3 else 1
        for _ in range(20):
            text = base
            for _ in range(n_typos):
                text = typo(text, rng)
            norm = normalize(text)
            if norm != self._norm[i] and norm not in self._norm_set and norm:
                return SimQuery(text, "misspelled", self.ids[i])
        return None

    def _partial(self, i: int, rng) -> SimQuery | None:
        spans, prefixes = self._partials(i)
        if not spans and not prefixes:
            return None
        pick = spans if spans and (not prefixes or rng.random() < 0.6) else prefixes
        return SimQuery(pick[int(rng.integers(len(pick)))], "partial", self.ids[i])

    def _tag(self, i: int, rng) -> SimQuery | None:
        tags, weights = self._tag_choices(i)
        if not tags:
            return None
        tag = tags[draw(rng, weights)]
        return SimQuery(tag, "tag", self.ids[i], tags=(tag,))

    def _like(self, i: int, rng) -> SimQuery | None:
        anchors, weights = self._anchors(i)
        if not anchors:
            return None
        j = anchors[draw(rng, weights)]
        name = self.names[j].lower() if rng.random() < 0.5 else self.names[j]
        template = self._like_templates[int(rng.integers(len(self._like_templates)))]
        return SimQuery(template.format(x=name), "like", self.ids[i], anchor=self.ids[j])

    def _vague(self, i: int, rng) -> SimQuery | None:
        combos, weights = self._vague_choices(i)
        if not combos:
            return None
        tags = list(combos[draw(rng, weights)])
        rng.shuffle(tags)
        template = self._vague_templates[int(rng.integers(len(self._vague_templates)))]
        return SimQuery(template.format(t=" ".join(tags)), "vague", self.ids[i],
                        tags=tuple(tags))

    # --- per-artist candidates (cached) -----------------------------------------------------

    def _row(self, target: str) -> int:
        try:
            return self.index[str(target)]
        except KeyError:
            raise RunError(f"unknown artist '{target}'", field="target",
                           hint="targets are artist_id values of artists.parquet") from None

    def _cached(self, kind: int, i: int, make):
        key = (kind, i)
        if key not in self._cache:
            self._cache[key] = make(i)
        return self._cache[key]

    @staticmethod
    def _typo_positions(text: str) -> list[int]:
        """Letters a typo may hit: ASCII letters after the first character."""
        return [k for k, ch in enumerate(text) if k > 0 and ch in KEY_NEIGHBOURS] \
            if sum(ch in KEY_NEIGHBOURS for ch in text) >= 4 else []

    def _partials(self, i: int) -> tuple[list[str], list[str]]:
        return self._cached(0, i, self._make_partials)

    def _make_partials(self, i: int) -> tuple[list[str], list[str]]:
        words = self._words[i]
        spans: list[str] = []
        n = len(words)
        for a in range(n):
            for b in range(a + 1, n + 1):
                part = words[a:b]
                if b - a == n or part[0] in _STOPWORDS or part[-1] in _STOPWORDS:
                    continue
                text = " ".join(part)
                if len(text) < 3 or text.isdigit():
                    continue
                if self._containing(part) <= self.max_partial_matches:
                    spans.append(text)
        full = self._norm[i]
        prefixes = []
        if len(full) >= 6:
            for length in range(max(4, math.ceil(0.4 * len(full))), len(full) - 1):
                p = full[:length]
                if p.endswith(" ") or p.rstrip() in _STOPWORDS:
                    continue
                lo = bisect.bisect_left(self._sorted_norm, p)
                hi = bisect.bisect_left(self._sorted_norm, p + "\U0010ffff")
                if hi - lo <= self.max_partial_matches:
                    prefixes.append(p)
        return spans, prefixes

    def _containing(self, part: tuple[str, ...]) -> int:
        """How many names contain the word sequence ``part``."""
        postings = min((self._postings.get(w, ()) for w in part), key=len)
        k = len(part)
        return sum(any(ws[s:s + k] == part for s in range(len(ws) - k + 1))
                   for ws in (self._words[j] for j in postings))

    def _artist_tags(self, i: int) -> list[str]:
        """The target's descriptive tags, strongest first, none echoing its name."""
        name_words = {w for w in self._words[i] if len(w) >= 4}
        return [t for t in self.tags[i] if t in self._descriptive
                and not name_words.intersection(normalize(t).split())]

    def _tag_choices(self, i: int) -> tuple[list[str], list[float]]:
        return self._cached(1, i, self._make_tag_choices)

    def _make_tag_choices(self, i: int):
        a = self.ids[i]
        tags = [t for t in self._artist_tags(i)
                if 2 <= len(self._tag_artists[t]) <= self.max_tag_artists]
        return tags, [float(self._tag_users.get((a, t), 1)) for t in tags]

    def _vague_choices(self, i: int) -> tuple[list[tuple[str, ...]], list[float]]:
        return self._cached(2, i, self._make_vague_choices)

    def _make_vague_choices(self, i: int):
        tags = self._artist_tags(i)[:6]
        cap = self.max_tag_artists
        pairs = {}
        for a, b in itertools.combinations(tags, 2):
            sa, sb = self._tag_artists[a], self._tag_artists[b]
            pairs[a, b] = sa & sb if len(sa) <= len(sb) else sb & sa
        combos = [p for p, both in pairs.items() if len(both) <= cap]
        weights = [2.0] * len(combos)
        for a, b, c in itertools.combinations(tags, 3):
            both = pairs[a, b]     # a triple narrows its pair: no need to intersect if small
            if len(both) <= cap or len(both.intersection(self._tag_artists[c])) <= cap:
                combos.append((a, b, c))
                weights.append(1.0)
        return combos, weights

    def _anchors(self, i: int) -> tuple[list[int], list[float]]:
        return self._cached(3, i, self._make_anchors)

    def _make_anchors(self, i: int):
        import numpy as np

        cols, co, cos = self._neighbour_row(i)
        order = np.lexsort((cols, -co, -cos))[: self.like_neighbours]
        name_words = set(self._words[i])
        genres = {t for t in self.tags[i] if t in self._descriptive}
        anchors, weights = [], []
        for k in order:
            j = int(cols[k])
            if not self._norm[j] or set(self._words[j]) <= name_words \
                    or name_words <= set(self._words[j]):
                continue   # "like <X>" should not spell out the target's own name
            if genres.isdisjoint(self.tags[j]):
                continue   # co-listened but unalike (two hits of the same crowd)
            ranked = self._sorted_cosines(j)      # rank of the target among X's neighbours
            rank = 1 + len(ranked) - int(ranked.searchsorted(cos[k] + 1e-12, side="right"))
            if rank <= self.max_like_rank:
                anchors.append(j)
                weights.append(float(co[k]))
        return anchors, weights

    def neighbours(self, target: str, n: int = 10) -> list[tuple[str, float, int]]:
        """Co-listened artists of ``target``: (artist_id, cosine, shared listeners), best first."""
        import numpy as np

        cols, co, cos = self._neighbour_row(self._row(target))
        order = np.lexsort((cols, -co, -cos))[:n]
        return [(self.ids[int(cols[k])], float(cos[k]), int(co[k])) for k in order]

    def _sorted_cosines(self, i: int):
        """The cosines of ``i``'s co-listened artists, ascending (cached)."""
        return self._cached(4, i, self._make_sorted_cosines)

    def _make_sorted_cosines(self, i: int):
        import numpy as np

        return np.sort(self._neighbour_row(i)[2])

    def _neighbour_row(self, i: int):
        """Artists sharing ≥ ``min_co_listeners`` listeners with ``i``: ids, counts, cosines."""
        import numpy as np

        c, listeners = self._colistening()
        lo, hi = c.indptr[i], c.indptr[i + 1]
        cols, co = c.indices[lo:hi], c.data[lo:hi]
        keep = (co >= self.min_co_listeners) & (cols != i)
        cols, co = cols[keep], co[keep]
        cos = co / np.sqrt(float(listeners[i]) * listeners[cols])
        return cols, co, cos

    def _colistening(self):
        """Artist × artist matrix of shared listeners (plays.parquet), built on first use."""
        if self._colisten is None:
            import numpy as np
            from scipy import sparse

            users = {u: k for k, u in enumerate(self.users)}
            rows = np.fromiter((users[u] for u in self._plays["user_id"].to_list()), np.int32)
            cols = np.fromiter((self.index[a] for a in self._plays["artist_id"].to_list()),
                               np.int32)
            a = sparse.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)),
                                  shape=(len(users), len(self.ids)))
            a.data[:] = 1     # duplicates of a (user, artist) pair count once
            c = (a.T @ a).tocsr()
            c.sort_indices()
            self._colisten = (c, np.asarray(a.sum(axis=0)).ravel().astype(np.float64))
        return self._colisten


# --- helpers --------------------------------------------------------------------------------

def held_out(value: str) -> bool:
    """Whether ``value`` (a user id, a wording) is in the held-out half (a stable hash)."""
    return hashlib.blake2b(f"ltrr-split\x1f{value}".encode(), digest_size=8).digest()[0] & 1 == 1


def half(values: tuple[str, ...], side: bool) -> tuple[str, ...]:
    """The values in one half; a half the hash left empty gets the other's first."""
    kept = tuple(v for v in values if held_out(v) == side)
    return kept or values[:1]


def _natural(s: str):
    return (0, int(s), "") if s.isdigit() else (1, 0, s)


def _check_type(qtype: str) -> str:
    if qtype not in QUERY_TYPES:
        raise RunError(f"unknown query type '{qtype}'", field="type",
                       hint=f"one of {', '.join(QUERY_TYPES)}")
    return qtype


def _mix(mix: dict[str, float] | None) -> tuple[list[str], list[float]]:
    mix = DEFAULT_MIX if mix is None else mix
    for t, w in mix.items():
        _check_type(t)
        if not isinstance(w, (int, float)) or w < 0 or not math.isfinite(w):
            raise RunError(f"weight of query type '{t}' must be a number ≥ 0, not {w!r}",
                           field=f"mix.{t}")
    types = [t for t in QUERY_TYPES if t in mix]
    weights = [float(mix[t]) for t in types]
    if sum(weights) <= 0:
        raise RunError("the query type mix has no positive weight", field="mix",
                       hint=f"e.g. {DEFAULT_MIX}")
    return types, weights


def draw(rng, weights) -> int:
    """Index drawn in proportion to ``weights`` (one uniform number from ``rng``)."""
    total = 0.0
    cum = []
    for w in weights:
        total += w
        cum.append(total)
    return min(bisect.bisect_right(cum, rng.random() * total), len(cum) - 1)


def typo(text: str, rng) -> str:
    """``text`` with one typo at an ASCII letter after the first character.

    Deletion (only in words of 5+ characters), transposition with the next letter,
    substitution by a neighbouring QWERTY key, or a doubled letter; a transposition or
    deletion that does not apply becomes a substitution.
    """
    positions = [k for k, ch in enumerate(text) if k > 0 and ch in KEY_NEIGHBOURS]
    if not positions:
        return text
    k = positions[int(rng.integers(len(positions)))]
    op = _TYPOS[draw(rng, _TYPO_P)]
    ch = text[k]
    if op == "transpose" and k + 1 < len(text) and text[k + 1] in KEY_NEIGHBOURS \
            and text[k + 1] != ch:
        return text[:k] + text[k + 1] + ch + text[k + 2:]
    if op == "delete" and _word_len(text, k) >= 5:
        return text[:k] + text[k + 1:]
    if op == "double":
        return text[:k + 1] + ch + text[k + 1:]
    near = KEY_NEIGHBOURS[ch]
    return text[:k] + near[int(rng.integers(len(near)))] + text[k + 1:]


def _word_len(text: str, k: int) -> int:
    start = k
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    end = k
    while end < len(text) and not text[end].isspace():
        end += 1
    return end - start
