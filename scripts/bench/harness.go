package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"
)

// benchmark is one row of the table: a figure for Alknet (the subject)
// and the same figure for its anchor, both measured in this run.
type benchmark struct {
	Name        string // short identifier, used by -only
	Milestone   string // the milestone that introduced the row (e.g. "M2")
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
	// Informational rows are reported with their goal but are not M-gates.
	Informational bool
	// Rounds is how many measured rounds each variant gets (ShortRounds
	// under -short). Variants alternate round by round and the median is
	// reported.
	Rounds, ShortRounds int
	Subject, Anchor     variant
}

// variant is one side of a row.
type variant struct {
	Label string // what was measured, e.g. "bare quic-go"
	// Start sets up whatever the variant needs (servers) and returns the
	// measurement. It must not leave goroutines behind once Stop returns.
	Start func(ctx context.Context, e *env) (*instance, error)
}

// instance is a started variant.
type instance struct {
	// Warmup runs once, unmeasured, before the first round (optional).
	Warmup func(ctx context.Context) error
	// Measure runs one round and returns the figure in the row's unit.
	Measure func(ctx context.Context) (float64, error)
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
	Name           string   `json:"name"`
	Milestone      string   `json:"milestone"`
	Description    string   `json:"description"`
	Unit           string   `json:"unit"`
	HigherIsBetter bool     `json:"higher_is_better"`
	Goal           float64  `json:"goal"`
	Informational  bool     `json:"informational"`
	Rounds         int      `json:"rounds"`
	Subject        series   `json:"subject"`
	Anchor         series   `json:"anchor"`
	Ratio          *float64 `json:"ratio,omitempty"`
	// Status is "ok" (ratio ≥ goal), "below" (ratio < goal) or "failed"
	// (the benchmark itself did not run to completion; see Error).
	Status          string  `json:"status"`
	Error           string  `json:"error,omitempty"`
	DurationSeconds float64 `json:"duration_seconds"`
}

// run measures one benchmark: both variants are started side by side,
// warmed up, then measured in alternating order (subject first on even
// rounds, anchor first on odd ones) so that drift affects both alike.
func (b *benchmark) run(ctx context.Context, e *env) (res result) {
	start := time.Now()
	rounds := b.Rounds
	if e.short {
		rounds = b.ShortRounds
	}
	res = result{
		Name: b.Name, Milestone: b.Milestone, Description: b.Description, Unit: b.Unit,
		HigherIsBetter: b.HigherIsBetter, Goal: b.Goal, Informational: b.Informational, Rounds: rounds,
		Subject: series{Label: b.Subject.Label}, Anchor: series{Label: b.Anchor.Label},
	}
	defer func() { res.DurationSeconds = time.Since(start).Seconds() }()
	fail := func(err error) result {
		res.Status, res.Error = "failed", err.Error()
		return res
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
	if subj, err = b.Subject.Start(ctx, e); err != nil {
		return fail(fmt.Errorf("start %s: %w", b.Subject.Label, err))
	}
	if anch, err = b.Anchor.Start(ctx, e); err != nil {
		stop()
		return fail(fmt.Errorf("start %s: %w", b.Anchor.Label, err))
	}
	subjSamples, anchSamples, err := measure(ctx, b, subj, anch, rounds, e)
	stop()
	if lerr := waitGoroutines(baseline, 3*time.Second); lerr != nil {
		err = errors.Join(err, lerr)
	}
	res.Subject = newSeries(b.Subject.Label, subjSamples)
	res.Anchor = newSeries(b.Anchor.Label, anchSamples)
	if err != nil {
		return fail(err)
	}
	var ratio float64
	if b.HigherIsBetter {
		ratio = res.Subject.Median / res.Anchor.Median
	} else {
		ratio = res.Anchor.Median / res.Subject.Median
	}
	res.Ratio = &ratio
	res.Status = "below"
	if ratio >= b.Goal {
		res.Status = "ok"
	}
	return res
}

func measure(ctx context.Context, b *benchmark, subj, anch *instance, rounds int, e *env) (s, a []float64, err error) {
	type side struct {
		label string
		in    *instance
		out   *[]float64
	}
	sides := [2]side{{b.Subject.Label, subj, &s}, {b.Anchor.Label, anch, &a}}
	for _, sd := range sides {
		if sd.in.Warmup == nil {
			continue
		}
		if err := sd.in.Warmup(ctx); err != nil {
			return s, a, fmt.Errorf("%s: warm-up: %w", sd.label, err)
		}
	}
	for r := range rounds {
		order := sides
		if r%2 == 1 {
			order[0], order[1] = order[1], order[0]
		}
		for _, sd := range order {
			if err := ctx.Err(); err != nil {
				return s, a, err
			}
			runtime.GC() // start each round from a clean heap
			v, err := sd.in.Measure(ctx)
			if err != nil {
				return s, a, fmt.Errorf("%s: round %d: %w", sd.label, r+1, err)
			}
			*sd.out = append(*sd.out, v)
			e.progress("  %-18s round %d/%d  %-44s %10.1f %s", b.Name, r+1, rounds, sd.label, v, b.Unit)
		}
	}
	return s, a, nil
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
