"""Online leak detection on the lower envelope of the target's memory.

Pure: no I/O, no clock. Feed it samples in time order with
:meth:`LeakDetector.add`; after every sample it answers a :class:`LeakVerdict`
(state, current slope, and the :class:`LeakEvent` s of that sample: a leak
called or cleared). At the end of a run :meth:`LeakDetector.final_verdict`
gives the :class:`FinalVerdict` and :attr:`LeakDetector.episodes` every
:class:`Episode` (a leak called and maybe cleared, a step, a growth that
ended). :func:`replay` runs a detector over the rows of a run's
``memory_samples.csv`` and gives the same final verdict as the monitor did.

The API, in short::

    det = LeakDetector(settings)              # settings: common.config.LeakDetection
    value = judged_bytes(rss, tiers)          # RSS less each tier's bytes up to its limit
    verdict = det.add(t, value, tiers)        # tiers: {name: TierReading(bytes, limit_bytes)}
    verdict.state, verdict.slope_mb_min, verdict.events
    det.episodes                              # [Episode(kind, series, called_at, cleared_at, ...)]
    final = det.final_verdict()               # FinalVerdict(verdict, reason, slope, CI, ...)
    final.as_dict()                           # what the monitor writes to leak_verdict.json
    replay(rows_or_dataframe, settings)       # the same FinalVerdict from memory_samples.csv

``verdict.trend`` and ``det.detected_at`` are those of the leak called now (the
memory series', else a tier's). An :class:`Episode` has ``kind`` "trend" (a
leak called; ``ended`` "released" when memory was given back), "plateau" (a
leak called whose growth then stopped: ``ended`` "slowed") or "step" (a level
shift of ``step_mb``, a finding, not a leak), ``series`` ("memory" or a tier),
``called_at``/``cleared_at`` on the samples' clock, and the slope and interval
of the scale that called it. :class:`FinalVerdict` has ``verdict`` ("leak", "no
leak", "not judged"), a one-line ``reason``, the calling scale's slope and
interval, ``called_at``, per-tier :class:`TierFinding` s, which tiers were
judged against a limit and which were trusted (``tiers_note``), the episodes,
and the settings it ran with.

What it judges
==============

- **The memory series** (series ``"memory"``): what :func:`judged_bytes` makes
  of a sample, the target's RSS less the bytes the target accounts to its
  tiers (caches), each tier counted **only up to its** ``limit_bytes``. A
  cache that fills to its limit is memory the target knows about; bytes above
  the limit are judged like memory nobody accounts for. A tier reported
  without a limit is subtracted whole: its tiers are *trusted*, and the final
  verdict says so.
- **Each tier with a limit** (series named after the tier): its bytes above
  the limit, ``max(0, bytes - limit_bytes)``, judged by the same rules. A
  cache whose eviction is broken grows past its limit and never shrinks; the
  finding names the tier ("conversations: +3.0 MB/min past its 8 MB limit").

How a series is judged
======================

With the settings of ``monitor.leak_detection`` (see
``stress_test_config.yml``, where each one is explained). R below is
``min_rise_mb``, the least rise a leak must make:

1. **Warm-up.** Samples in the first ``warmup_s`` seconds are ignored.
2. **Lower envelope.** Time is cut into windows of ``window_s``; each complete
   window gives one point, its minimum (at the window's middle). Garbage
   collector and allocator sawtooth faster than a window rides *above* this
   envelope. The points of the last ``lookback_s`` are kept.
3. **Kept level** (:func:`kept_level`). A sawtooth slower than a window (a
   cache or a batch of buffers filled over 20-90 s, then freed at once) is still
   in the envelope. A point counts as *given back* when the envelope later falls
   below it by more than a tolerance (:data:`GIVEBACK_SHARE` of R and
   :data:`GIVEBACK_SIGMAS` noise sigmas); it is lowered to that later level plus
   the tolerance. Between two troughs less than a step apart, or a step or more
   apart when a neighbouring pair of troughs rises about as much (at most
   :data:`STAIR_REGULARITY` times more or less: a leak under a large sawtooth
   raises each trough by its rate times the period), the kept level is the line
   through them, however long the period. So a sawtooth
   alone becomes the flat line of its troughs, a leak under a sawtooth the line
   its troughs climb, and growth never given back stays as it is. The climb
   since the newest trough is not judged yet (it is most likely memory the
   sawtooth gives back again) while it is younger and lower than
   :data:`TAIL_FACTOR` times the longest and the highest climb given back; the
   time it took still counts in the span judged. A climb given back that began
   before the envelope's first point (in the warm-up, or past the lookback) took,
   at the rate seen, as long as rising from the trough to its top takes, not just
   the part seen.
4. **Change points.** The kept level is cut into segments, each fit by a
   straight line (``ruptures`` binary segmentation, linear model, at least
   :data:`MIN_SEGMENT` points a segment), with a penalty of ``penalty * sigma**2
   * ln(n)``: ``sigma`` the envelope's noise (from the median absolute deviation
   of its differences, so a step or a ramp does not inflate it; at least
   :data:`NOISE_FLOOR_SHARE` of R), n its points. Each cut is one of:

   - a **step**: the two lines disagree at the cut by at least ``step_sigmas``
     sigma *and* at least :data:`STEP_SHARE` of R (a step of +40 MB; a smaller
     jump cannot make a leak's rise by itself);
   - a **bend**: the lines meet (a rate changed, a leak began or slowed).

5. **Where trends are judged.** A trend is judged only from the newest step
   back (never across a step) and never before the *floor* a clearing left
   (below). Bends do not cut: a leak that starts on a flat line is judged across
   its start, as a rise on a longer span. So a step of +40 MB after a warm-up is
   reported as a step (an :class:`Episode` of kind ``step``), not judged as
   the trend "warm-up, then up by 40 MB".

   **Step, staircase, sawtooth.** One step (or two) up is a load that stayed: a
   service that loads a model, an index, a cache once does not keep doing so at
   a steady pace. At least ``staircase_steps`` upward steps in a row, no step
   down among them, at a steady pace (the longest gap between two of them at
   most :data:`STAIR_REGULARITY` times the shortest) and still going (the newest
   step no older than :data:`STAIR_REGULARITY` times the longest gap) are a
   **staircase**, a leak that grows in chunks: the trend is judged across those
   steps, from the start of the tread before the first one. A **sawtooth** has
   no steps at all: its drops are memory given back (step 3), so its kept level
   is its troughs; a leak under it raises them by a little each period (less than
   a step, or about as much each period: one trend), a sawtooth alone leaves them
   flat.
6. **Scales.** Within that span the trend is judged over the last
   ``lookback_s`` and over shorter spans (each :data:`SCALE_STEP` of the
   last), down to ``shortest_share`` of the lookback (and at least
   ``min_windows`` points, at least 8): a leak that started a minute ago fills
   a short scale long before the lookback.
7. **Enough growth.** At a scale of L minutes a leak needs a Theil-Sen slope of
   at least ``creep_mb_per_min + R / L`` (and ``min_slope_mb_per_min``): a rise of
   R above a slow creep, so a short scale cannot mistake a few MB of noise for a
   fast leak, and a long one does not call a service's slow settling (a creep)
   a leak.
8. **The full test** at that scale, all of:

   - **significant**: the Theil-Sen confidence interval
     (``scipy.stats.theilslopes``) lies above 0, and a Mann-Kendall test gives
     p < ``significance / k``, k the number of scales judged (Bonferroni); the
     interval is ``1 - 2 * significance / k``;
   - **sustained**: the slopes of both halves of the scale are at least
     ``sustain`` times the slope of the whole, and the recent half's at least
     ``sustain`` times the older half's (a cache filling ever more slowly has a
     recent half much slower than its older half);
   - **still at its high**: the newest point is within :data:`PEAK_TOLERANCE`
     of the scale's required rise of the scale's highest point.

   A rise that passes on ``confirm`` consecutive judgements (one a window) is
   called a leak (an :class:`Episode` of kind ``trend``).

   **The rate reported** is the leak's since it began, not the scale's: a
   scale that began before the leak judges flat time too (a leak that started 75
   s ago is called on a scale of about 100 s), and its slope is too low. The
   start is where a continuous hinge, flat then a line, best fits the kept
   level's anchors (the points it did not lower: a sawtooth's troughs) within
   the scale (:func:`rise_start`); the Theil-Sen slope of the kept level from
   the first anchor at or after it is reported, with an interval spanning its
   own and the scale's. The test and the clearing still use the scale. A
   staircase is judged from the tread before its first step already: its rate
   is its pace over whole steps (a hinge would start it on a later tread).
9. **Cleared on evidence.** A called leak clears when the Theil-Sen slope of
   the *newest segment* (from the newest cut of any kind, or across the steps
   of a staircase that is still going; its last L seconds of judged points at
   most, L the span that called the leak, and at least the shortest span) has
   had the high end of its ``1 - 2 * significance`` confidence interval below
   the slope a leak needs at L, and the slope itself below
   :data:`~memstress.monitors.leak.series.CLEAR_SHARE` (a half) of that need, for
   ``clear_hold_s`` seconds. The question is the one that called the leak, asked
   of the newest data, with a gap between calling and clearing: a filling cache
   clears as its rate falls, a slow creep after a step or a fill does not keep a
   leak alive, and a steady leak does not clear, even one whose rate is right at
   L's need (without the gap, a per-request leak of 1.23 MB/min called at the
   120 s scale, which needs 1.25, was cleared in a real run while it went on
   growing). The leak's episode becomes a ``plateau``: growth that ended.
   It also clears when the envelope falls :data:`RELEASE_FACTOR` times R
   below the kept level's peak since the call: memory was given back (the
   episode stays a ``trend``, ``ended`` "released"). Either way the clearing
   time becomes the *floor*: a new leak must make the required rise again after
   it, so the growth that was just cleared is not called twice.

Rates are MB per minute with MB = 2**20 bytes, as the reference service counts.
Fixed constants (in the modules below) are the ones whose value follows from
the method; the ones a user may tune are settings.

What it cannot tell apart
=========================

These are called and then cleared, never a final leak verdict; the report
lists them as episodes. Each was tried and left as it is, for the reason given.

- **A large sawtooth's first climb** (24 MB over 120 s, then given back). Until
  the first drop nothing tells it from a leak of 12 MB/min, and waiting a whole
  period before calling any rise would miss the goal of finding a 2 MB/min leak
  within 90 s. It is called only when the climb seen after the warm-up fills a
  shortest span and two more windows (a 120 s sawtooth on most phases, at 90 s of
  the run; a 90 s one only when it drops at 90 s). After the first drop the kept
  level is its troughs and later climbs are not judged (step 3), so it is called
  at most once, and cleared when it gives the memory back.
- **Two like steps in consecutive periods of a large sawtooth.** Two loads of
  about the same size (8 MB each, say) that stay, one in each of two periods in a
  row of a 90 s sawtooth, raise its troughs as a 5 MB/min leak under it would for
  those two periods. They are judged as one rise (called, then cleared as growth
  that ended about 110 s later), not as two steps: waiting for a third like rise
  before drawing the troughs' line cleared a 2 MB/min leak under a 24 MB / 90 s
  sawtooth once and called it again a period later on 4 of 20 tuning seeds.
  Without such a sawtooth they are two steps.
- **A slow settling that stops just before the call.** The reference service
  grows about 0.55 MB/min for its first five minutes, as a 0.5 MB/min leak
  would, and stops about 40 s before the long scale reaches the slope a leak
  needs. Refusing a call whose newest quarter's interval lies below that slope
  removes these calls on the bench's dev seeds, but delays steady leaks by 5-25
  s on the tuning series (a 2 MB/min one to 90 s, its goal); so it was not
  added. The clearing (step 9) ends the episode 40-45 s later.
- **Memory that follows stored data** (a vector store filling). While vectors
  and memory both grow steadily, growth per vector and a leak in time are the
  same line; only a change in the filling rate tells them apart. The report's
  vectors section gives the memory per stored vector.

The modules
===========

- :mod:`.detector`: :class:`LeakDetector`, :func:`judged_bytes`, :func:`replay`:
  what is judged (the memory series, each tier past its limit), the final verdict;
- :mod:`.series`: one series' envelope, state and episodes (steps 1, 2 and 9);
- :mod:`.judge`: one look at an envelope (steps 3 to 8);
- :mod:`.segments`: the kept level, change points, staircases (steps 3 to 5);
- :mod:`.trend`: scales, the slope a leak needs, the trend test (steps 6 to 8),
  :func:`on_run_clock`;
- :mod:`.verdict`: events, verdicts, episodes: plain dataclasses.

Import from ``memstress.monitors.leak``: the names below are its public API.
"""

from __future__ import annotations

from memstress.common.units import MB
from memstress.monitors.leak.detector import (
    LeakDetector,
    TierReading,
    judged_bytes,
    replay,
    tier_readings,
)
from memstress.monitors.leak.judge import Judgement, judge
from memstress.monitors.leak.segments import (
    Cut,
    Kept,
    cuts,
    kept_level,
    noise_mb,
    rise_start,
    staircase,
)
from memstress.monitors.leak.trend import (
    Trend,
    full_trend,
    median_slope,
    min_points,
    needed_slope,
    on_run_clock,
    required_rise_mb,
    scales,
    shortest_scale,
)
from memstress.monitors.leak.verdict import (
    CLEAR,
    LEAK,
    LEAK_VERDICT,
    MEMORY,
    NO_LEAK,
    NOT_JUDGED,
    PLATEAU,
    STEP,
    TREND,
    VERDICT_FILE,
    WARMUP,
    Episode,
    FinalVerdict,
    LeakEvent,
    LeakVerdict,
    TierFinding,
)

__all__ = [
    "CLEAR",
    "LEAK",
    "LEAK_VERDICT",
    "MB",
    "MEMORY",
    "NOT_JUDGED",
    "NO_LEAK",
    "PLATEAU",
    "STEP",
    "TREND",
    "VERDICT_FILE",
    "WARMUP",
    "Cut",
    "Episode",
    "FinalVerdict",
    "Judgement",
    "Kept",
    "LeakDetector",
    "LeakEvent",
    "LeakVerdict",
    "TierFinding",
    "TierReading",
    "Trend",
    "cuts",
    "full_trend",
    "judge",
    "judged_bytes",
    "kept_level",
    "median_slope",
    "min_points",
    "needed_slope",
    "noise_mb",
    "on_run_clock",
    "replay",
    "required_rise_mb",
    "rise_start",
    "scales",
    "shortest_scale",
    "staircase",
    "tier_readings",
]
