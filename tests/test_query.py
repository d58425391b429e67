"""Store-level reads on the real engines (standalone and cluster): ``HistoryStore.query``.

Every filter and every combination of them, ordering, keyset pagination (also while
writes happen between pages), collapse, and the prefix read. The expected results come
from a plain-Python oracle over the full, unfiltered history, written from the rules in
docs/api.md (not from query.py).
"""

from __future__ import annotations

import contextlib
import itertools
import random
import re
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadtest import bench_filters
from watch_history.connection import ClientType
from watch_history.errors import InvalidInputError, StaleUpdateError
from watch_history.models import (
    AssetInfo,
    EventType,
    HistoryItem,
    HistoryQuery,
    ProgressUpdate,
    Status,
    epoch_ms,
    from_epoch_ms,
)
from watch_history.settings import Settings
from watch_history.store import HistoryStore

BASE_MS = epoch_ms(datetime(2026, 1, 1, tzinfo=UTC))
MIN_RESUME = 30.0  # Settings().min_resume_seconds


@dataclass(frozen=True)
class Spec:
    """One asset as a test writes it: ``at`` is seconds after BASE_MS."""

    asset_id: str
    at: float
    position: float = 600.0
    duration: float | None = 3000.0
    complete: bool = False
    asset: dict[str, Any] = field(default_factory=dict)

    def update(self, profile_id: str) -> ProgressUpdate:
        return ProgressUpdate(
            profile_id=profile_id,
            asset_id=self.asset_id,
            position=self.position,
            duration=self.duration,
            event_time=from_epoch_ms(BASE_MS + int(self.at * 1000)),
            event_type=EventType.COMPLETE if self.complete else EventType.HEARTBEAT,
            asset=AssetInfo.model_validate(self.asset) if self.asset else None,
        )


def fresh_profile() -> str:
    return f"p-{uuid.uuid4().hex[:12]}"


def seed(store: HistoryStore, profile_id: str, specs: Sequence[Spec]) -> None:
    result = store.record_batch([s.update(profile_id) for s in specs])
    assert not result.failures, result.failures


def ids(items: Sequence[HistoryItem]) -> list[str]:
    return [i.asset_id for i in items]


def read_all(store: HistoryStore, profile_id: str, query: HistoryQuery) -> list[HistoryItem]:
    """Every page of a query, following nextCursor; checks the page sizes on the way."""
    items: list[HistoryItem] = []
    cursor: str | None = None
    for _ in range(1000):
        page = store.query(profile_id, query.model_copy(update={"cursor": cursor}))
        items.extend(page.items)
        if page.next_cursor is None:
            assert len(page.items) <= query.limit
            return items
        assert len(page.items) == query.limit, "a page with a nextCursor must be full"
        cursor = page.next_cursor
    raise AssertionError("pagination did not end")


# --- the oracle -----------------------------------------------------------------------


def selects(item: HistoryItem, q: HistoryQuery) -> bool:
    """Whether the query's filters (not collapse) select the item, as docs/api.md says."""
    checks = [
        q.asset_ids is None or item.asset_id in q.asset_ids,
        q.sport is None or item.sport == q.sport,
        q.series is None or item.series == q.series,
        not q.teams or bool(set(q.teams) & set(item.teams or ())),
        q.show is None or item.show == q.show,
        q.season is None or item.season == q.season,
        q.asset_type is None or item.asset_type == q.asset_type,
    ]
    if not all(checks):
        return False
    if q.status is Status.COMPLETED:
        return item.completed
    if q.status is Status.EVER_COMPLETED:
        return item.completed_at is not None
    if q.status is Status.IN_PROGRESS:
        return not item.completed and item.position >= MIN_RESUME
    return True


def group_of(item: HistoryItem, collapse: str) -> tuple[Any, ...]:
    if collapse == "show":
        return ("show", item.show) if item.show is not None else ("asset", item.asset_id)
    if item.series is not None:
        return ("series", item.sport, item.series)
    return ("asset", item.asset_id)


def expected(history: Sequence[HistoryItem], q: HistoryQuery) -> list[str]:
    """What a query must return over all pages, from the full history in order."""
    out: list[str] = []
    groups: set[tuple[Any, ...]] = set()
    for item in history:
        if not selects(item, q):
            continue
        if q.collapse is not None:
            group = group_of(item, q.collapse)
            if group in groups:
                continue
            groups.add(group)
        out.append(item.asset_id)
    return out


# --- a catalogue that exercises every dimension ------------------------------------------


def catalogue() -> list[Spec]:
    """64 assets: matches of two sports (a series id "cup" in both), episodes of two shows,
    movies and highlights; ties in time; positions around the resume threshold; completed
    items; live items without duration."""
    rng = random.Random(20260301)
    specs: list[Spec] = []
    for i in range(64):
        at = 100_000 - (i // 3) * 60  # three assets per instant: ties by assetId
        asset_id = f"{rng.choice('abcdefgh')}{rng.randrange(100):02d}-{i}"
        position = rng.choice([5.0, 29.0, 30.0, 600.0, 1800.0])
        complete = rng.random() < 0.25
        duration: float | None = 3000.0 if rng.random() < 0.9 else None
        kind = i % 4
        asset: dict[str, Any]
        if kind in (0, 1):
            sport = "cricket" if kind == 0 else "football"
            pool = ["csk", "mi", "rcb", "kkr"] if kind == 0 else ["ars", "che", "liv"]
            teams = rng.sample(pool, rng.randrange(3))
            asset = {"type": "match", "sport": sport, "series": rng.choice(["ipl", "cup", None])}
            if sport == "football" and asset["series"] == "ipl":
                asset["series"] = "epl"
            if teams:
                asset["teams"] = teams
        elif kind == 2:
            asset = {
                "type": "episode",
                "show": rng.choice(["house", "tide"]),
                "season": rng.choice([1, 2, 3]),
                "episode": i,
            }
        elif rng.random() < 0.5:
            asset = {"type": "movie", "title": f"Movie {i}"}
        else:
            asset = {"type": "highlight", "sport": "cricket", "series": "ipl"}
        specs.append(Spec(asset_id, at, position, duration, complete, asset))
    return specs


SCOPES: list[dict[str, Any]] = [
    {},
    {"sport": "cricket"},
    {"sport": "cricket", "series": "ipl"},
    {"sport": "cricket", "teams": ["csk", "kkr"]},
    {"sport": "cricket", "series": "ipl", "teams": ["csk", "kkr"]},
    {"sport": "football", "series": "cup"},
    {"show": "house"},
    {"show": "house", "season": 2},
]


@pytest.fixture
def seeded(store: HistoryStore) -> tuple[str, list[HistoryItem], list[Spec]]:
    """A profile holding the catalogue, and its full history as the store returns it."""
    pid = fresh_profile()
    specs = catalogue()
    seed(store, pid, specs)
    history = store.query(pid, HistoryQuery(limit=100)).items
    return pid, list(history), specs


def test_full_history_is_newest_first_ties_by_asset_id(
    seeded: tuple[str, list[HistoryItem], list[Spec]],
) -> None:
    _, history, specs = seeded
    order = sorted(specs, key=lambda s: (-s.at, s.asset_id))
    assert ids(history) == [s.asset_id for s in order]
    by_id = {s.asset_id: s for s in specs}
    for item in history:
        spec = by_id[item.asset_id]
        assert item.sport == spec.asset.get("sport")
        assert item.series == spec.asset.get("series")
        assert item.teams == spec.asset.get("teams")
        assert item.show == spec.asset.get("show")
        assert item.season == spec.asset.get("season")
        assert item.asset_type == spec.asset.get("type")
        done = spec.complete or (spec.duration is not None and spec.position >= 0.9 * 3000)
        assert item.completed is done


@pytest.mark.parametrize("scope", SCOPES, ids=lambda s: "+".join(s) or "none")
def test_every_filter_combination_over_all_pages(
    scope: dict[str, Any],
    seeded: tuple[str, list[HistoryItem], list[Spec]],
    store: HistoryStore,
    make_store: Callable[..., HistoryStore],
) -> None:
    """scope x assetType x assetId x status x collapse, each read page by page, with the
    default prefix and with a tiny one (which makes nearly every page need the full read)."""
    pid, history, _ = seeded
    some_ids = [i.asset_id for i in history[::4]] + ["never-watched"]
    tiny_prefix = make_store(read_prefix_items=2)
    limits = itertools.cycle([1, 3, 7, 100])
    nonempty = 0
    for asset_type, asset_ids, status, collapse in itertools.product(
        [None, "match", "episode"], [None, some_ids], list(Status), [None, "show", "series"]
    ):
        query = HistoryQuery.model_validate(
            {
                **scope,
                "asset_type": asset_type,
                "asset_ids": asset_ids,
                "status": status,
                "collapse": collapse,
                "limit": next(limits),
            }
        )
        want = expected(history, query)
        nonempty += bool(want)
        for reader in (store, tiny_prefix):
            got = ids(read_all(reader, pid, query))
            assert got == want, query
    assert nonempty >= 10, "the catalogue should make many combinations select something"


def test_each_single_filter_selects_what_it_names(
    seeded: tuple[str, list[HistoryItem], list[Spec]], store: HistoryStore
) -> None:
    pid, _, _ = seeded

    def read(**fields: Any) -> list[HistoryItem]:
        return read_all(store, pid, HistoryQuery.model_validate({"limit": 100, **fields}))

    assert {i.sport for i in read(sport="cricket")} == {"cricket"}
    assert {(i.sport, i.series) for i in read(sport="football", series="cup")} == {
        ("football", "cup")
    }
    assert all(
        {"csk", "kkr"} & set(i.teams or ()) for i in read(sport="cricket", teams=["csk", "kkr"])
    )
    assert {(i.show, i.season) for i in read(show="house", season=2)} == {("house", 2)}
    assert {i.asset_type for i in read(asset_type="movie")} == {"movie"}
    assert all(i.completed for i in read(status="completed"))
    progressing = read(status="in_progress")
    assert progressing
    assert all(not i.completed and i.position >= MIN_RESUME for i in progressing)
    assert min(i.position for i in progressing) == 30.0  # the threshold itself is resumable


# --- ordering -------------------------------------------------------------------------


def test_order_follows_updates_and_ties(store: HistoryStore) -> None:
    pid = fresh_profile()
    seed(store, pid, [Spec(a, at=50) for a in ["d", "b", "e", "a", "c"]] + [Spec("z", at=10)])
    assert ids(store.query(pid, HistoryQuery()).items) == ["a", "b", "c", "d", "e", "z"]
    store.record_progress(Spec("z", at=60).update(pid))  # watched again: to the top
    assert ids(store.query(pid, HistoryQuery()).items) == ["z", "a", "b", "c", "d", "e"]
    with pytest.raises(StaleUpdateError):  # an older heartbeat does not reorder
        store.record_progress(Spec("e", at=40).update(pid))
    assert ids(store.query(pid, HistoryQuery()).items) == ["z", "a", "b", "c", "d", "e"]


def test_empty_and_unknown_profiles_give_an_empty_last_page(store: HistoryStore) -> None:
    for query in (HistoryQuery(), HistoryQuery(sport="cricket"), HistoryQuery(asset_ids=["x"])):
        page = store.query(fresh_profile(), query)
        assert page.items == []
        assert page.next_cursor is None


# --- asset ids --------------------------------------------------------------------------


def test_asset_ids_in_history_order_missing_and_duplicates_left_out(store: HistoryStore) -> None:
    pid = fresh_profile()
    seed(store, pid, [Spec(f"a{i}", at=i) for i in range(10)])
    page = store.query(pid, HistoryQuery(asset_ids=["a1", "nope", "a7", "a1", "a4"]))
    assert ids(page.items) == ["a7", "a4", "a1"]
    assert page.next_cursor is None
    many = [f"a{i}" for i in range(10)] + [f"x{i}" for i in range(90)]
    assert ids(read_all(store, pid, HistoryQuery(asset_ids=many, limit=3))) == [
        f"a{i}" for i in reversed(range(10))
    ]


def test_get_item_and_get_items(store: HistoryStore) -> None:
    pid = fresh_profile()
    seed(store, pid, [Spec("m1", at=5, asset={"type": "movie"})])
    item = store.get_item(pid, "m1")
    assert item is not None
    assert item.asset_type == "movie"
    assert store.get_item(pid, "m2") is None
    assert store.get_item(fresh_profile(), "m1") is None
    with pytest.raises(InvalidInputError):
        store.get_items(pid, [f"a{i}" for i in range(101)])


# --- collapse -------------------------------------------------------------------------


def test_collapse_show_and_series_keep_the_newest_of_each(store: HistoryStore) -> None:
    pid = fresh_profile()
    cup = {"type": "match", "series": "cup"}
    seed(
        store,
        pid,
        [
            Spec("h-s2e2", at=90, asset={"type": "episode", "show": "house", "season": 2}),
            Spec("c-cup-1", at=80, asset={**cup, "sport": "cricket"}),
            Spec("movie", at=70, asset={"type": "movie"}),
            Spec("f-cup-1", at=60, asset={**cup, "sport": "football"}),
            Spec("h-s2e1", at=50, asset={"type": "episode", "show": "house", "season": 2}),
            Spec("c-cup-2", at=40, asset={**cup, "sport": "cricket"}),
            Spec("h-s1e9", at=30, position=10, asset={"type": "episode", "show": "house"}),
            Spec("c-nose", at=20, asset={"type": "match", "sport": "cricket"}),
            Spec("t-s1e1", at=10, asset={"type": "episode", "show": "tide"}),
        ],
    )

    def rail(**fields: Any) -> list[str]:
        return ids(read_all(store, pid, HistoryQuery.model_validate(fields)))

    # one per show; items of no show stand for themselves
    assert rail(collapse="show") == [
        "h-s2e2",
        "c-cup-1",
        "movie",
        "f-cup-1",
        "c-cup-2",
        "c-nose",
        "t-s1e1",
    ]
    # one per sport+series: "cup" of cricket and "cup" of football are two series
    assert rail(collapse="series") == [
        "h-s2e2",
        "c-cup-1",
        "movie",
        "f-cup-1",
        "h-s2e1",
        "h-s1e9",
        "c-nose",
        "t-s1e1",
    ]
    # filters first, then the newest of each group among what they select
    assert rail(collapse="show", show="house", season=2) == ["h-s2e2"]
    assert rail(collapse="series", sport="cricket") == ["c-cup-1", "c-nose"]
    # the same rail, one item per page: no group comes back on a later page
    assert rail(collapse="show", limit=1) == rail(collapse="show")
    assert rail(collapse="series", limit=2) == rail(collapse="series")


def test_collapsed_rail_of_in_progress_items(store: HistoryStore) -> None:
    """The continue-watching rail: the newest RESUMABLE episode of each show, even when a
    newer episode of it was finished or only just started."""
    pid = fresh_profile()
    show = {"type": "episode", "show": "house"}
    seed(
        store,
        pid,
        [
            Spec("e4", at=40, position=10, asset=show),  # just started: not resumable
            Spec("e3", at=30, complete=True, asset=show),
            Spec("e2", at=20, position=900, asset=show),
            Spec("e1", at=10, position=900, asset=show),
        ],
    )
    rail = store.query(pid, HistoryQuery(status=Status.IN_PROGRESS, collapse="show"))
    assert ids(rail.items) == ["e2"]
    assert ids(store.continue_watching(pid).items) == ["e2", "e1"]


# --- pagination -------------------------------------------------------------------------


def test_cursor_is_bound_to_its_filters_not_to_the_limit(store: HistoryStore) -> None:
    pid = fresh_profile()
    seed(store, pid, [Spec(f"a{i}", at=i, asset={"sport": "cricket"}) for i in range(6)])
    first = store.query(pid, HistoryQuery(sport="cricket", limit=2))
    assert first.next_cursor is not None
    wider = store.query(pid, HistoryQuery(sport="cricket", limit=10, cursor=first.next_cursor))
    assert ids(wider.items) == ["a3", "a2", "a1", "a0"]
    for other in (HistoryQuery(), HistoryQuery(sport="football"), HistoryQuery(show="x")):
        with pytest.raises(InvalidInputError, match="another query"):
            store.query(pid, other.model_copy(update={"cursor": first.next_cursor}))


@pytest.mark.parametrize(
    "cursor",
    ["x", "!!!!", "bm90IGpzb24", "WzEsMl0", "eyJhIjoxfQ", "WyJ4IiwieSIsInoiXQ", "W251bGxd"],
)
def test_malformed_cursors_are_invalid_input(store: HistoryStore, cursor: str) -> None:
    with pytest.raises(InvalidInputError):
        store.query(fresh_profile(), HistoryQuery(cursor=cursor))


def _pages_with_writes(
    store: HistoryStore,
    pid: str,
    query: HistoryQuery,
    between: Callable[[int], None],
) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for number in range(100):
        page = store.query(pid, query.model_copy(update={"cursor": cursor}))
        seen.extend(ids(page.items))
        cursor = page.next_cursor
        if cursor is None:
            return seen
        between(number)
    raise AssertionError("pagination did not end")


def test_pages_survive_removals_inserts_and_moves_between_them(store: HistoryStore) -> None:
    """The cases offset paging gets wrong, written out one by one."""
    pid = fresh_profile()
    seed(store, pid, [Spec(f"a{i:02d}", at=100 - i) for i in range(12)])  # a00 newest

    def between(page: int) -> None:
        if page == 0:  # seen a00..a02
            store.remove(pid, ["a01"])  # a seen item goes: nothing shifts into the gap
            store.record_progress(Spec("new", at=500).update(pid))  # a new item on top
            store.record_progress(Spec("a00", at=600).update(pid))  # a seen one moves up
        elif page == 1:  # seen a03..a05
            store.record_progress(Spec("a10", at=700).update(pid))  # unseen moves up: skipped
            store.record_progress(Spec("a07", at=93.5).update(pid))  # unseen, stays below

    seen = _pages_with_writes(store, pid, HistoryQuery(limit=3), between)
    assert seen == ["a00", "a01", "a02", "a03", "a04", "a05", "a06", "a07", "a08", "a09", "a11"]


_WRITE = st.tuples(
    st.sampled_from(["update", "new", "remove"]),
    st.integers(0, 40),  # which asset
    st.integers(0, 30),  # its new time (older than the item: a stale write)
)


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_no_untouched_item_is_skipped_or_repeated_across_pages(
    store: HistoryStore, data: st.DataObject
) -> None:
    """Whatever is written between pages, every item that was not written in between
    comes exactly once, in history order; only written items may be missed or repeated."""
    pid = fresh_profile()
    times = data.draw(st.lists(st.integers(0, 15), max_size=25), label="times")
    sport = data.draw(st.sampled_from([None, "cricket"]), label="sport filter")
    limit = data.draw(st.integers(1, 5), label="limit")

    def spec(index: int, name: str, at: int) -> Spec:
        return Spec(name, at=at * 10, asset={"sport": "cricket" if index % 2 else "football"})

    specs = [spec(i, f"a{i:02d}", t) for i, t in enumerate(times)]
    seed(store, pid, specs)
    touched: set[str] = set()
    created = itertools.count(100)

    def between(_page: int) -> None:
        for kind, which, at in data.draw(st.lists(_WRITE, max_size=3), label="writes"):
            if kind == "new":
                index = next(created)
                name = f"n{index}"
            elif specs:
                index = which % len(specs)
                name = specs[index].asset_id
            else:
                continue
            touched.add(name)
            if kind == "remove":
                store.remove(pid, [name])
                continue
            with contextlib.suppress(StaleUpdateError):
                store.record_progress(spec(index, name, at).update(pid))

    seen = _pages_with_writes(store, pid, HistoryQuery(sport=sport, limit=limit), between)
    untouched = sorted(
        (s for s in specs if s.asset_id not in touched and sport in (None, s.asset["sport"])),
        key=lambda s: (-s.at, s.asset_id),
    )
    counts = Counter(seen)
    assert [a for a in seen if a in {s.asset_id for s in untouched}] == [
        s.asset_id for s in untouched
    ]
    assert {a for a, n in counts.items() if n > 1} <= touched


# --- the prefix read ---------------------------------------------------------------------


class RecordingStore(HistoryStore):
    """The real store on the real engine, noting which JSON paths each read fetched."""

    def __init__(self, client: ClientType, settings: Settings) -> None:
        super().__init__(client, settings)
        self.paths: list[str] = []

    def _read_items(
        self,
        key: str,
        prefix: int | None,
        asset_filter: Callable[[list[Any]], bool] | None = None,
    ) -> tuple[list[list[Any]], bool]:
        self.paths.append("$.h" if prefix is None else f"$.h[0:{prefix}]")
        return super()._read_items(key, prefix, asset_filter)

    def fetched(self, profile_id: str, query: HistoryQuery) -> tuple[list[str], list[str]]:
        self.paths = []
        return ids(self.query(profile_id, query).items), self.paths


@pytest.fixture
def recording(client: ClientType, settings: Settings) -> RecordingStore:
    return RecordingStore(client, settings.model_copy(update={"read_prefix_items": 48}))


def test_first_page_reads_only_a_prefix_when_it_fills_the_page_and_asset_filters_read_all(
    recording: RecordingStore,
) -> None:
    pid = fresh_profile()
    tail = {"type": "episode", "show": "rare"}
    specs = [
        Spec(f"a{i:03d}", at=1000 - i, asset=tail if i >= 190 else {}, complete=i >= 190)
        for i in range(200)
    ]
    seed(recording, pid, specs)
    order = [s.asset_id for s in specs]

    slice_ = re.compile(r"^\$\.h\[0:\d+\]$")

    def one_slice(paths: list[str]) -> bool:
        return len(paths) == 1 and bool(slice_.match(paths[0]))

    got, paths = recording.fetched(pid, HistoryQuery())
    assert got == order[:20]
    assert one_slice(paths)
    got, paths = recording.fetched(pid, HistoryQuery(limit=100))
    assert got == order[:100]
    assert paths == ["$.h[0:101]"]  # at least limit + 1: whether there is a next page
    got, paths = recording.fetched(pid, HistoryQuery(status=Status.IN_PROGRESS, limit=5))
    assert got == order[:5]
    assert one_slice(paths)
    # a status whose matches all sit past the prefix: then the whole array, still correct
    got, paths = recording.fetched(pid, HistoryQuery(status=Status.COMPLETED))
    assert got == order[190:]
    assert len(paths) == 2
    assert slice_.match(paths[0])
    assert paths[1] == "$.h"
    # a query on what an asset is matches few items: the whole array at once
    got, paths = recording.fetched(pid, HistoryQuery(show="rare"))
    assert got == order[190:]
    assert paths == ["$.h"]
    # later pages start anywhere: the whole array
    first = recording.query(pid, HistoryQuery(limit=5))
    assert recording.fetched(pid, HistoryQuery(limit=5, cursor=first.next_cursor)) == (
        order[5:10],
        ["$.h"],
    )
    # lookups by asset id read those items only
    assert recording.fetched(pid, HistoryQuery(asset_ids=["a199", "a000"])) == (
        ["a000", "a199"],
        [],
    )


def test_a_prefix_shorter_than_asked_is_the_whole_history(recording: RecordingStore) -> None:
    pid = fresh_profile()
    seed(recording, pid, [Spec(f"a{i}", at=i, complete=i == 0) for i in range(10)])
    for status, want in (
        (Status.COMPLETED, ["a0"]),
        (Status.IN_PROGRESS, [f"a{i}" for i in range(9, 0, -1)]),
    ):
        got, paths = recording.fetched(pid, HistoryQuery(status=status))
        assert got == want
        assert len(paths) == 1  # the slice came back short: it was everything
        assert paths[0].startswith("$.h[0:")


@pytest.mark.parametrize("prefix", [1, 19, 20, 21, 48, 10_000])
def test_results_do_not_depend_on_the_prefix_size(
    make_store: Callable[..., HistoryStore], prefix: int
) -> None:
    """A full profile (max_items) read through prefixes around the page size."""
    reader = make_store(read_prefix_items=prefix)
    pid = fresh_profile()
    specs = catalogue() * 4
    specs = [
        Spec(f"{s.asset_id}-{n}", s.at - n * 7, s.position, s.duration, s.complete, s.asset)
        for n, s in enumerate(specs)
    ]
    seed(reader, pid, specs[: reader.settings.max_items + 10])  # the oldest are evicted
    history = read_all(reader, pid, HistoryQuery(limit=100))
    assert len(history) == reader.settings.max_items
    for fields in ({}, {"show": "tide", "season": 3}, {"sport": "football", "teams": ["liv"]}):
        for status in Status:
            query = HistoryQuery.model_validate({**fields, "status": status, "limit": 20})
            assert ids(read_all(reader, pid, query)) == expected(history, query)


def test_the_filter_benchmark_runs_and_both_ways_agree(store: HistoryStore) -> None:
    """loadtest/bench_filters.py checks that JSONPath on objects and Python on packed items
    select the same items before it times them; a tiny run keeps it from rotting."""
    rows, memory = bench_filters.run(store, [30], samples=2, budget=0.01)
    assert [r.filter for r in rows] == ["sport", "sport+series+team", "show+season", "in progress"]
    assert memory[0].objects_bytes > memory[0].packed_bytes
    assert "| 30 | sport |" in bench_filters.markdown(rows, memory)


def test_ever_completed_keeps_an_item_being_rewatched(store: HistoryStore) -> None:
    """status=completed is the state as of the last watch (a rewatch is not completed);
    ever_completed is every item with a completedAt."""
    pid = fresh_profile()
    seed(
        store,
        pid,
        [
            Spec("done", at=10, position=3000.0, complete=True),
            Spec("rewatch", at=20, position=3000.0, complete=True),
            Spec("never", at=30),
        ],
    )
    seed(store, pid, [Spec("rewatch", at=40, position=120.0)])  # started again
    completed = read_all(store, pid, HistoryQuery(status=Status.COMPLETED))
    ever = read_all(store, pid, HistoryQuery(status=Status.EVER_COMPLETED))
    assert ids(completed) == ["done"]
    assert ids(ever) == ["rewatch", "done"]
