// Command bench runs Alknet's benchmark suite (`make bench`) and prints
// each figure next to its anchor measured in the same run on the same
// machine, with the ratio and whether it meets its goal (README.md, "Quick start").
//
// A row compares Alknet (the subject) with an anchor: the same work done
// with the bare library Alknet is built on (quic-go, crypto/tls), with the
// same certificate and ALPN, over real loopback networking (127.0.0.1) in
// the same process. Both sides are started together, warmed up, then
// measured in alternating rounds; the median of the rounds is reported.
// The ratio is oriented so that 1.0 is parity and higher is better for
// Alknet; it is marked "ok" when it reaches the row's goal and "below"
// otherwise. Timings are reported, never asserted: a missed goal does not
// change the exit status. A benchmark that cannot complete (an error, a
// wrong echo, a goroutine left running after teardown) is printed as
// FAILED and makes the command exit 1.
//
// The results are also written as JSON to bench/results.json at the module
// root (see -out); -json prints the same JSON to stdout instead of the
// table. Progress goes to stderr.
//
// Usage:
//
//	go run ./scripts/bench [-short] [-only NAME[,NAME...]] [-json] [-out FILE] [-list] [-cpuprofile FILE]
//
// -only takes exact row names or path.Match patterns (e.g. 'echo-*').
//
// To add a row, append a benchmark to the suite (see m2.go): a name, unit,
// goal, direction, round counts, and a Start func for the subject and for
// the anchor that returns how to measure one round and how to stop. Rows
// figured from the same rounds (a p50 and a p99) are one benchmark with
// companions (benchmark.Also; see m3.go). A row may instead report what
// Alknet adds to a baseline (benchmark.Delta: subject − anchor, with an
// absolute upper bound benchmark.Max) or have no anchor at all (an Anchor
// without Start: a Max on the subject's figure, or informational); see
// m4.go, whose rows run the real ./bin/alknet serve with its plugins.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"alknet.dev/alknet/core/identity"
)

// suite is every row, in the order printed. New areas append theirs.
func suite() []benchmark {
	var all []benchmark
	all = append(all, m2...)
	all = append(all, dialRows...)
	all = append(all, m3...)
	all = append(all, m4...)
	all = append(all, m5...)
	all = append(all, gosshRows...)
	all = append(all, m9...)
	all = append(all, m9fs...)
	all = append(all, m10...)
	all = append(all, m11...)
	all = append(all, m12...)
	all = append(all, m13...)
	return all
}

// env is what every benchmark shares: the node identity and the run mode.
type env struct {
	short       bool
	cert        tls.Certificate
	fingerprint string
}

// progress reports to stderr, so that stdout carries only the table or JSON.
func (e *env) progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
}

// report is the JSON document.
type report struct {
	Started         time.Time `json:"started"`
	DurationSeconds float64   `json:"duration_seconds"`
	Short           bool      `json:"short"`
	Only            string    `json:"only,omitempty"`
	Machine         machine   `json:"machine"`
	Results         []result  `json:"results"`
	Failed          int       `json:"failed"`
}

type machine struct {
	GoVersion  string `json:"go_version"`
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPUModel   string `json:"cpu_model,omitempty"`
	// UDPRmemMax is net.core.rmem_max (Linux): quic-go wants 7 MiB socket
	// buffers and warns when it cannot get them.
	UDPRmemMax string `json:"udp_rmem_max,omitempty"`
	// LoadAvg is /proc/loadavg's 1-minute figure when the run started:
	// other work on the machine makes every figure noisier.
	LoadAvg string `json:"load_avg,omitempty"`
}

func main() {
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role)) // a server of a row, in a process of its own (m4.go)
	}
	os.Exit(run())
}

func run() int {
	short := flag.Bool("short", false, "quick run: fewer and smaller rounds")
	only := flag.String("only", "", "run only these rows: comma-separated names or patterns (e.g. 'echo-*')")
	asJSON := flag.Bool("json", false, "print the results as JSON to stdout instead of the table")
	out := flag.String("out", "", "write the JSON results here (default bench/results.json at the module root; \"-\" to skip)")
	list := flag.Bool("list", false, "list the rows and exit")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file (to see where a low ratio comes from); samples carry the labels row=NAME and side=alknet|anchor (go tool pprof -tagfocus side=alknet)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "bench: unexpected arguments %q\n", flag.Args())
		return 2
	}

	all := suite()
	if *list {
		for _, b := range all {
			for _, r := range b.rows() {
				fmt.Printf("%-20s %-8s %-7s goal %-12s %s\n", r.Name, b.Area, r.Unit, r.goal(), r.Description)
			}
		}
		return 0
	}
	selected, err := filter(all, *only)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 2
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: cpu profile: %v\n", err)
			return 1
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: generate key: %v\n", err)
		return 1
	}
	cert, err := identity.RawKeyTLSCertificate(key)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		return 1
	}
	e := &env{short: *short, cert: cert, fingerprint: identity.KeyFingerprint(key.Public().(ed25519.PublicKey))}

	rep := report{Started: time.Now(), Short: *short, Only: *only, Machine: machineInfo()}
	mode := "full run"
	if *short {
		mode = "short run"
	}
	e.progress("bench: %d benchmark(s), %s, %s", len(selected), mode, rep.Machine.summary())
	for i := range selected {
		b := &selected[i]
		e.progress("[%d/%d] %s: %s", i+1, len(selected), b.Name, b.Description)
		for _, r := range b.run(ctx, e) {
			if r.Status == "failed" {
				rep.Failed++
				fmt.Fprintf(os.Stderr, "bench: %s FAILED: %s\n", r.Name, r.Error)
			}
			rep.Results = append(rep.Results, r)
		}
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "bench: interrupted")
			break
		}
	}
	removeSFTPSource()
	removeFSSource()
	resolveRelativeGoals(rep.Results)
	rep.DurationSeconds = time.Since(rep.Started).Seconds()

	doc, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench: encode results: %v\n", err)
		return 1
	}
	doc = append(doc, '\n')
	if *asJSON {
		os.Stdout.Write(doc)
	} else {
		printTable(os.Stdout, rep)
	}
	if *out != "-" {
		file := *out
		if file == "" {
			file = filepath.Join(moduleRoot(), "bench", "results.json")
		}
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err == nil {
			err = os.WriteFile(file, doc, 0o644)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "bench: write results: %v\n", err)
			return 1
		}
		e.progress("bench: results written to %s", file)
	}
	if rep.Failed > 0 || ctx.Err() != nil {
		return 1
	}
	return 0
}

// filter keeps the rows named by -only, in suite order. Naming one row of
// a benchmark runs it whole (with its companions, benchmark.Also).
func filter(all []benchmark, only string) ([]benchmark, error) {
	if strings.TrimSpace(only) == "" {
		return all, nil
	}
	var names []string
	for _, b := range all {
		names = append(names, b.names()...)
	}
	keep := map[string]bool{}
	for _, pat := range strings.Split(only, ",") {
		pat = strings.TrimSpace(pat)
		if pat == "" {
			continue
		}
		matched := false
		for _, n := range names {
			if ok, err := path.Match(pat, n); err != nil {
				return nil, fmt.Errorf("-only %q: %v", pat, err)
			} else if ok {
				keep[n], matched = true, true
			}
		}
		if !matched {
			return nil, fmt.Errorf("-only %q matches no benchmark; have: %s", pat, strings.Join(names, ", "))
		}
	}
	// A row whose goal is relative to another needs that row in the run.
	for _, b := range all {
		for _, r := range b.rows() {
			if keep[r.Name] && r.MaxTimes != nil {
				keep[r.MaxTimes.Row] = true
			}
		}
	}
	var out []benchmark
	for _, b := range all {
		if slices.ContainsFunc(b.names(), func(n string) bool { return keep[n] }) {
			out = append(out, b)
		}
	}
	return out, nil
}

func printTable(w io.Writer, rep report) {
	mode := "full run"
	if rep.Short {
		mode = "short run (-short)"
	}
	fmt.Fprintf(w, "Alknet benchmarks — %s, %s, %.0f s\n", rep.Started.Format("2006-01-02 15:04"), mode, rep.DurationSeconds)
	fmt.Fprintf(w, "%s\n", rep.Machine.summary())
	fmt.Fprintf(w, "Median of alternating rounds over 127.0.0.1 (± is half the min–max spread); endpoint and call rows run in this process, plugin and ssh rows against ./bin/alknet serve processes (ssh anchors: OpenSSH sshd).\n")
	fmt.Fprintf(w, "Ratio = Alknet / anchor for rates, anchor / Alknet for times (µs, ms): 1.00 = parity, higher is better.\n")
	fmt.Fprintf(w, "Δ = Alknet − anchor, in the row's unit: what Alknet adds to a baseline; its goal is an upper bound.\n\n")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "BENCHMARK\tUNIT\tROUNDS\tALKNET\tANCHOR\tRATIO/Δ\tGOAL\t")
	for _, r := range rep.Results {
		goal := (companion{Unit: r.Unit, Goal: r.Goal, Max: r.GoalMax, MaxTimes: r.GoalMaxTimes, Delta: r.Delta != nil}).goal()
		if goal != "—" {
			goal += ": " + r.Status
		}
		if r.Status == "failed" {
			goal = "FAILED"
		} else if r.Informational {
			goal += " (info)"
		}
		ratio := "—"
		if r.Ratio != nil {
			ratio = fmt.Sprintf("%.3f", *r.Ratio)
		} else if r.Delta != nil {
			ratio = fmt.Sprintf("Δ %+.1f", *r.Delta)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t\n", r.Name, r.Unit, r.Rounds, fmtSeries(r.Subject), fmtSeries(r.Anchor), ratio, goal)
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, r := range rep.Results {
		anchor := r.Anchor.Label
		if anchor == "" {
			anchor = "none"
		}
		fmt.Fprintf(w, "%s: %s\n    alknet: %s\n    anchor: %s\n", r.Name, r.Description, r.Subject.Label, anchor)
	}
	for _, r := range rep.Results {
		if r.Error != "" {
			first, _, _ := strings.Cut(r.Error, "\n")
			fmt.Fprintf(w, "FAILED %s: %s\n", r.Name, first)
		}
	}
}

func fmtSeries(s series) string {
	if len(s.Samples) == 0 {
		return "—"
	}
	return fmt.Sprintf("%.1f ±%.0f%%", s.Median, 100*s.spread())
}

func machineInfo() machine {
	m := machine{
		GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH,
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/net/core/rmem_max"); err == nil {
		m.UDPRmemMax = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			m.LoadAvg = f[0]
		}
	}
	return m
}

func (m machine) summary() string {
	s := fmt.Sprintf("%s %s/%s, %d CPU(s), GOMAXPROCS %d", m.GoVersion, m.OS, m.Arch, m.CPUs, m.GOMAXPROCS)
	if m.CPUModel != "" {
		s += ", " + m.CPUModel
	}
	if m.UDPRmemMax != "" {
		s += ", rmem_max " + m.UDPRmemMax
	}
	if m.LoadAvg != "" {
		s += ", load " + m.LoadAvg + " at start"
	}
	return s
}

// moduleRoot is the nearest directory at or above the working directory
// that holds go.mod (the working directory if there is none).
func moduleRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return wd
		}
		dir = parent
	}
}
