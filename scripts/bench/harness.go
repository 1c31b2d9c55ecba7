package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchmark is one row of the table: a figure for Alknet (the subject)
// and the same figure for its anchor, both measured in this run.
type benchmark struct {
	Name        string // short identifier, used by -only
	Area        string // what the row measures: endpoint, call, plugins, ssh
	Description string
	Unit        string
	// HigherIsBetter says which way the unit points. The ratio is always
	// oriented so that 1.0 is parity and above 1.0 is better than the
	// anchor: subject/anchor when higher is better, anchor/subject when
	// lower is better.
	HigherIsBetter bool
	// Goal is the minimum acceptable ratio. Missing it is reported, never
	// treated as a failure.
	Goal float64
	// Max, when set, makes the goal absolute instead (Goal is then unused):
	// the row's figure must not exceed Max, in Unit. The figure is the
	// subject's median, or with Delta the subject's median minus the
	// anchor's. For rows whose anchor is a baseline the subject adds to
	// (the same node without a plugin) or that have no anchor at all.
	Max float64
	// Delta reports subject − anchor (what Alknet adds, in Unit) instead
	// of a ratio; it needs an anchor.
	Delta bool
	// MaxTimes makes the goal relative to another row of the same run: the
	// row's Delta must not exceed Factor × that row's Delta (e.g. plugin
	// call latency against the process boundary's floor). That row is run
	// too whenever this one is.
	MaxTimes *relativeGoal
	// Informational rows are reported with their goal but are not M-gates.
	Informational bool
	// Rounds is how many measured rounds each variant gets (ShortRounds
	// under -short). Variants alternate round by round and the median is
	// reported.
	Rounds, ShortRounds int
	// Subject is Alknet's side; Anchor the reference. An Anchor without a
	// Start means the row has none: give it a Max or make it Informational.
	Subject, Anchor variant
	// Also are further rows figured from the same rounds (e.g. the p99 of
	// the run whose p50 is this row): each instance's Also returns their
	// figures after every Measure. They are printed right after this row.
	Also []companion
}

// companion is a row measured by another row's rounds (benchmark.Also).
// Its fields mean what the benchmark's fields of the same names mean.
type companion struct {
	Name, Description, Unit string
	HigherIsBetter          bool
	Goal                    float64
	Max                     float64
	Delta                   bool
	MaxTimes                *relativeGoal
	Informational           bool
}

// relativeGoal bounds a Delta row by Factor × the Delta of row Row.
type relativeGoal struct {
	Row    string  `json:"row"`
	Factor float64 `json:"factor"`
}

// goal is how the row's goal is printed: "≥ 0.95" (a ratio), "≤ 300 ms"
// (an absolute bound on Alknet's figure), "Δ ≤ 60 µs" (a bound on what
// Alknet adds to its anchor), or "—" (none).
func (c companion) goal() string {
	switch {
	case c.MaxTimes != nil && c.Max > 0:
		return fmt.Sprintf("Δ ≤ %g × %s Δ = %.1f %s", c.MaxTimes.Factor, c.MaxTimes.Row, c.Max, c.Unit)
	case c.MaxTimes != nil:
		return fmt.Sprintf("Δ ≤ %g × %s Δ", c.MaxTimes.Factor, c.MaxTimes.Row)
	case c.Max > 0 && c.Delta:
		return fmt.Sprintf("Δ ≤ %g %s", c.Max, c.Unit)
	case c.Max > 0:
		return fmt.Sprintf("≤ %g %s", c.Max, c.Unit)
	case c.Goal > 0 && !c.Delta:
		return fmt.Sprintf("≥ %.2f", c.Goal)
	}
	return "—"
}

// names are the rows this benchmark prints, its own first.
func (b *benchmark) names() []string {
	names := []string{b.Name}
	for _, c := range b.Also {
		names = append(names, c.Name)
	}
	return names
}

// rows are the benchmark's own row and its companions.
func (b *benchmark) rows() []companion {
	rows := []companion{{Name: b.Name, Description: b.Description, Unit: b.Unit, HigherIsBetter: b.HigherIsBetter,
		Goal: b.Goal, Max: b.Max, Delta: b.Delta, MaxTimes: b.MaxTimes, Informational: b.Informational}}
	return append(rows, b.Also...)
}

// variant is one side of a row.
type variant struct {
	Label string // what was measured, e.g. "bare quic-go"
	// Start sets up whatever the variant needs (servers) and returns the
	// measurement. It must not leave goroutines behind once Stop returns.
	// Nil for an anchor means the row has none.
	Start func(ctx context.Context, e *env) (*instance, error)
}

// instance is a started variant.
type instance struct {
	// Warmup runs once, unmeasured, before the first round (optional).
	Warmup func(ctx context.Context) error
	// Measure runs one round and returns the figure in the row's unit.
	Measure func(ctx context.Context) (float64, error)
	// Also returns the figures of the benchmark's Also rows, in order,
	// from the round Measure has just run (required when there are any).
	Also func() []float64
	// Stop tears everything down and waits for it.
	Stop func()
}

// series is the figures of one variant.
type series struct {
	Label   string    `json:"label"`
	Median  float64   `json:"median"`
	Min     float64   `json:"min"`
	Max     float64   `json:"max"`
	Samples []float64 `json:"samples"`
}

func newSeries(label string, samples []float64) series {
	s := series{Label: label, Samples: samples}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	s.Min, s.Max = sorted[0], sorted[len(sorted)-1]
	if n := len(sorted); n%2 == 1 {
		s.Median = sorted[n/2]
	} else {
		s.Median = (sorted[n/2-1] + sorted[n/2]) / 2
	}
	return s
}

// spread is half the min-max range relative to the median.
func (s series) spread() float64 {
	if s.Median == 0 {
		return 0
	}
	return (s.Max - s.Min) / 2 / s.Median
}

// result is one row as printed and as written to JSON.
type result struct {
	Name           string  `json:"name"`
	Area           string  `json:"area"`
	Description    string  `json:"description"`
	Unit           string  `json:"unit"`
	HigherIsBetter bool    `json:"higher_is_better"`
	Goal           float64 `json:"goal"`
	// GoalMax is an absolute goal (benchmark.Max): the subject's median,
	// or Delta, must not exceed it.
	GoalMax float64 `json:"goal_max,omitempty"`
	// GoalMaxTimes makes GoalMax Factor × the Delta of another row of the
	// same run (benchmark.MaxTimes); it is set once that row is measured.
	GoalMaxTimes  *relativeGoal `json:"goal_max_times,omitempty"`
	Informational bool          `json:"informational"`
	Rounds        int           `json:"rounds"`
	Subject       series        `json:"subject"`
	Anchor        series        `json:"anchor"`
	Ratio         *float64      `json:"ratio,omitempty"`
	// Delta is subject − anchor (medians), for rows that report what
	// Alknet adds rather than a ratio (benchmark.Delta).
	Delta *float64 `json:"delta,omitempty"`
	// Status is "ok" (the goal is met), "below" (it is not), "info" (the
	// row has no goal) or "failed" (the benchmark itself did not run to
	// completion; see Error).
	Status          string  `json:"status"`
	Error           string  `json:"error,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// run measures one benchmark: both variants are started side by side,
// warmed up, then measured in alternating order (subject first on even
// rounds, anchor first on odd ones) so that drift affects both alike. It
// returns the benchmark's row followed by its companions (Also).
func (b *benchmark) run(ctx context.Context, e *env) []result {
	start := time.Now()
	rounds := b.Rounds
	if e.short {
		rounds = b.ShortRounds
	}
	rows := b.rows()
	res := make([]result, len(rows))
	for i, r := range rows {
		res[i] = result{
			Name: r.Name, Area: b.Area, Description: r.Description, Unit: r.Unit,
			HigherIsBetter: r.HigherIsBetter, Goal: r.Goal, GoalMax: r.Max, GoalMaxTimes: r.MaxTimes, Informational: r.Informational, Rounds: rounds,
			Subject: series{Label: b.Subject.Label}, Anchor: series{Label: b.Anchor.Label},
		}
		if r.Max > 0 {
			res[i].Goal = 0
		}
	}
	finish := func(err error) []result {
		for i := range res {
			res[i].DurationSeconds = time.Since(start).Seconds()
			if err != nil {
				res[i].Status, res[i].Error = "failed", err.Error()
			}
		}
		return res
	}

	hasAnchor := b.Anchor.Start != nil
	for _, r := range rows {
		if r.Delta && !hasAnchor {
			return finish(fmt.Errorf("row %s: Delta needs an anchor", r.Name))
		}
	}

	baseline := runtime.NumGoroutine()
	var subj, anch *instance
	stop := func() {
		if subj != nil {
			subj.Stop()
		}
		if anch != nil {
			anch.Stop()
		}
	}
	var err error
	if subj, err = b.start(ctx, e, subjectSide); err != nil {
		return finish(fmt.Errorf("start %s: %w", b.Subject.Label, err))
	}
	if hasAnchor {
		if anch, err = b.start(ctx, e, anchorSide); err != nil {
			stop()
			return finish(fmt.Errorf("start %s: %w", b.Anchor.Label, err))
		}
	}
	subjSamples, anchSamples, err := measure(ctx, b, subj, anch, rounds, e)
	stop()
	if lerr := waitGoroutines(baseline, 3*time.Second); lerr != nil {
		err = errors.Join(err, lerr)
	}
	for i, r := range rows {
		res[i].Subject = newSeries(b.Subject.Label, subjSamples[i])
		res[i].Anchor = newSeries(b.Anchor.Label, anchSamples[i])
		if err != nil {
			continue
		}
		res[i].Ratio, res[i].Delta, res[i].Status = judge(r, res[i].Subject.Median, res[i].Anchor.Median, hasAnchor)
	}
	return finish(err)
}

// resolveRelativeGoals sets the bound of every row whose goal is relative
// to another row (benchmark.MaxTimes) from that row's Delta in the same
// run, and judges it again.
func resolveRelativeGoals(results []result) {
	delta := map[string]*float64{}
	for _, r := range results {
		delta[r.Name] = r.Delta
	}
	for i := range results {
		r := &results[i]
		if r.GoalMaxTimes == nil || r.Status == "failed" {
			continue
		}
		ref := delta[r.GoalMaxTimes.Row]
		if ref == nil {
			r.Status = "info"
			continue
		}
		r.GoalMax = r.GoalMaxTimes.Factor * *ref
		c := companion{Max: r.GoalMax, Delta: true}
		_, _, r.Status = judge(c, r.Subject.Median, r.Anchor.Median, true)
	}
}

// judge compares the subject's median s with the anchor's a (if the row
// has an anchor) and checks the row's goal.
func judge(r companion, s, a float64, hasAnchor bool) (ratio, delta *float64, status string) {
	figure := s
	switch {
	case hasAnchor && r.Delta:
		d := s - a
		delta, figure = &d, d
	case hasAnchor:
		q := s / a
		if !r.HigherIsBetter {
			q = a / s
		}
		ratio = &q
	}
	switch {
	case r.Max > 0:
		status = "below"
		if figure <= r.Max {
			status = "ok"
		}
	case ratio != nil && r.Goal > 0:
		status = "below"
		if *ratio >= r.Goal {
			status = "ok"
		}
	default:
		status = "info"
	}
	return ratio, delta, status
}

// measure runs the rounds; s[i] and a[i] are the samples of row i
// (b.rows()) for the subject and the anchor.
func measure(ctx context.Context, b *benchmark, subj, anch *instance, rounds int, e *env) (s, a [][]float64, err error) {
	rows := b.rows()
	s, a = make([][]float64, len(rows)), make([][]float64, len(rows))
	type side struct {
		side  string
		label string
		in    *instance
		out   [][]float64
	}
	sides := []side{{subjectSide, b.Subject.Label, subj, s}}
	if anch != nil {
		sides = append(sides, side{anchorSide, b.Anchor.Label, anch, a})
	}
	for _, sd := range sides {
		if sd.in.Warmup == nil {
			continue
		}
		if err := labelled(ctx, b, sd.side, sd.in.Warmup); err != nil {
			return s, a, fmt.Errorf("%s: warm-up: %w", sd.label, err)
		}
	}
	for r := range rounds {
		order := slices.Clone(sides)
		if r%2 == 1 {
			slices.Reverse(order)
		}
		for _, sd := range order {
			if err := ctx.Err(); err != nil {
				return s, a, err
			}
			runtime.GC() // start each round from a clean heap
			var v float64
			err := labelled(ctx, b, sd.side, func(ctx context.Context) (err error) {
				v, err = sd.in.Measure(ctx)
				return err
			})
			if err != nil {
				return s, a, fmt.Errorf("%s: round %d: %w", sd.label, r+1, err)
			}
			figures := []float64{v}
			if len(b.Also) > 0 && sd.in.Also != nil {
				figures = append(figures, sd.in.Also()...)
			}
			if len(figures) != len(rows) {
				return s, a, fmt.Errorf("%s: round %d: %d figure(s) for %d row(s)", sd.label, r+1, len(figures), len(rows))
			}
			for i, f := range figures {
				sd.out[i] = append(sd.out[i], f)
				e.progress("  %-18s round %d/%d  %-44s %10.1f %s", rows[i].Name, r+1, rounds, sd.label, f, rows[i].Unit)
			}
		}
	}
	return s, a, nil
}

// The values of the "side" profiler label.
const (
	subjectSide = "alknet"
	anchorSide  = "anchor"
)

// start starts one variant with the profiler labels row=NAME and
// side=alknet|anchor, which the goroutines it starts (servers, connections)
// inherit: `go tool pprof -tagfocus side=alknet` then keeps one side of a
// -cpuprofile.
func (b *benchmark) start(ctx context.Context, e *env, side string) (in *instance, err error) {
	v := b.Subject
	if side == anchorSide {
		v = b.Anchor
	}
	err = labelled(ctx, b, side, func(ctx context.Context) (err error) {
		in, err = v.Start(ctx, e)
		return err
	})
	return in, err
}

// labelled runs f with the profiler labels of one side of b (see start).
func labelled(ctx context.Context, b *benchmark, side string, f func(context.Context) error) (err error) {
	pprof.Do(ctx, pprof.Labels("row", b.Name, "side", side), func(ctx context.Context) { err = f(ctx) })
	return err
}

// waitGoroutines waits until no more goroutines run than before the
// benchmark started; a benchmark that leaves some behind has failed.
func waitGoroutines(baseline int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			return fmt.Errorf("%d goroutine(s) still running %s after teardown (baseline %d); stacks:\n%s",
				n-baseline, timeout, baseline, indent(string(buf)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ")
}

// opsPerSecond runs op back to back in workers goroutines for d and
// returns the completed ops per second; the first error ends the round.
func opsPerSecond(ctx context.Context, workers int, d time.Duration, op func(context.Context) error) (float64, error) {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if err := op(ctx); err != nil {
					fail(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return float64(done.Load()) / elapsed.Seconds(), nil
}
