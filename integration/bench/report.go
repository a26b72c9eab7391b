package main

import (
	"debug/buildinfo"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"
)

const dedupTargetPct = 1.0

// report collects results and renders them as markdown.
type report struct {
	cfg     config
	started time.Time
	dirFS   string
	goFuse  string
	siteIDs []string
	results []*wresult
	notes   []string
	errs    []string
}

// wresult holds the results of one workload on all targets.
type wresult struct {
	w    workload
	rows []*row
	errs map[string]error // by target label
}

// row is one metric of a workload, with the values of all runs per target
// label.
type row struct {
	m    metric
	vals map[string][]float64
}

// median returns the median of the values for label.
func (rw *row) median(label string) (float64, bool) {
	vs := slices.Clone(rw.vals[label])
	if len(vs) == 0 {
		return 0, false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

// spread returns half the min-max range relative to the median, in percent.
func (rw *row) spread(label string) float64 {
	vs := rw.vals[label]
	med, _ := rw.median(label)
	if len(vs) < 2 || med == 0 {
		return 0
	}
	return 100 * (slices.Max(vs) - slices.Min(vs)) / 2 / math.Abs(med)
}

func newReport(cfg config) *report {
	return &report{cfg: cfg, started: time.Now()}
}

func (r *report) errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *report) result(w workload) *wresult {
	for _, res := range r.results {
		if res.w.name == w.name {
			return res
		}
	}
	res := &wresult{w: w, errs: map[string]error{}}
	r.results = append(r.results, res)
	return res
}

// add records the metrics (or the error) of workload w on target label.
func (r *report) add(w workload, label string, ms []metric, err error) {
	res := r.result(w)
	if err != nil {
		res.errs[label] = err
		r.errorf("%s on %s: %v", w.name, label, err)
		return
	}
	for _, m := range ms {
		var rw *row
		for _, x := range res.rows {
			if x.m.name == m.name {
				rw = x
			}
		}
		if rw == nil {
			rw = &row{m: m, vals: map[string][]float64{}}
			res.rows = append(res.rows, rw)
		}
		rw.vals[label] = append(rw.vals[label], m.value)
	}
}

// finishReport adds the notes that need the whole run.
func (b *bench) finishReport() {
	if b.ref != nil && b.ref.total.Opens > 0 {
		t := b.ref.total
		b.notef("Reference daemon I/O over the whole run: %d READ requests (%s), %d WRITE requests (%s), %d opens. "+
			"With passthrough on, these would be ~0 (checked by running loopref -passthrough).",
			t.Reads, fmtBytes(t.ReadBytes), t.Writes, fmtBytes(t.WriteBytes), t.Opens)
	}
}

func fmtValue(v float64, unit string) string {
	switch {
	case unit == "s" && v < 0.1:
		return fmt.Sprintf("%.4f", v) // a copy made from chunks: milliseconds
	case unit == "s" || strings.HasPrefix(unit, "%"):
		return fmt.Sprintf("%.2f", v)
	case unit == "MiB/s", unit == "KiB":
		return fmt.Sprintf("%.1f", v)
	case unit == "ms" && v < 1:
		return fmt.Sprintf("%.3f", v)
	case unit == "ms":
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

func (r *report) cell(res *wresult, rw *row, label string) string {
	if v, ok := rw.median(label); ok {
		if len(rw.vals[label]) > 1 {
			return fmt.Sprintf("%s ±%.0f%%", fmtValue(v, rw.m.unit), rw.spread(label))
		}
		return fmtValue(v, rw.m.unit)
	}
	if res.w.geofsOnly && label == "ref" {
		return "n/a"
	}
	if _, ok := res.errs[label]; ok {
		return "**error**"
	}
	return "—"
}

// ratio is geofs/ref for throughputs and ref/geofs for times, so that > 1
// always means geofs is better; then the verdict on the metric's goal.
func (r *report) ratio(res *wresult, rw *row) string {
	g, gok := rw.median("geofs")
	if res.w.name == "dedup" && gok {
		verdict := "PASS"
		if g >= dedupTargetPct {
			verdict = "FAIL"
		}
		return fmt.Sprintf("target < %g %%: %s", dedupTargetPct, verdict)
	}
	ref, rok := rw.median("ref")
	ratio := "—"
	if gok && rok && g > 0 && ref > 0 {
		if rw.m.higherBetter {
			ratio = fmtRatio(g / ref)
		} else {
			ratio = fmtRatio(ref / g)
		}
	}
	if rw.m.goal == nil || !gok {
		return ratio
	}
	verdict := "PASS"
	if !rw.m.goal.met(g, ref) {
		verdict = "FAIL"
	}
	return fmt.Sprintf("%s; target %s: %s", ratio, rw.m.goal.text, verdict)
}

// fmtRatio shows two decimals, or two significant digits for tiny ratios.
func fmtRatio(x float64) string {
	if x < 0.1 {
		return fmt.Sprintf("%.2g×", x)
	}
	return fmt.Sprintf("%.2f×", x)
}

func (r *report) markdown() string {
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }

	p("## geofs benchmark\n\n")
	p("- Date: %s (took %v)\n", r.started.Format("2006-01-02 15:04:05 MST"), time.Since(r.started).Round(time.Second))
	p("- Host: nproc %d, CPU %s, %s RAM, kernel %s\n", runtime.NumCPU(), cpuModel(), memTotal(), kernelRelease())
	p("- Build: %s, reference go-fuse %s\n", runtime.Version(), orDash(r.goFuse))
	p("- Scratch dir: %s (%s), used by both filesystems\n", r.cfg.dir, r.dirFS)
	perTarget := r.cfg.perTarget()
	if perTarget {
		p("- Parameters: -size %s, -files %d, -rand-reads %d, -dedup-size %s, -runs %d\n",
			fmtBytes(r.cfg.size), r.cfg.files, r.cfg.randReads, fmtBytes(r.cfg.dedupSize), r.cfg.runs)
	}
	replication := r.cfg.anySelected(func(w workload) bool { return w.runPair != nil })
	if replication {
		p("- Replication parameters: -repl-commits %d, -repl-files %d, -repl-delta-size %s, -repl-big-size %s, -runs %d\n",
			r.cfg.replCommits, r.cfg.replFiles, fmtBytes(r.cfg.replDeltaSize), fmtBytes(r.cfg.replBigSize), r.cfg.runs)
	}
	p("- geofs: %s", r.cfg.geofsBin)
	if perTarget {
		p(" (fresh site per run: %s)", orDash(strings.Join(r.siteIDs, ", ")))
	}
	p("\n")
	if perTarget {
		p("- ref: go-fuse loopback (fs.NewLoopbackRoot) over a directory in the scratch dir, separate process, " +
			"FUSE passthrough off, MaxWrite 1 MiB, DirectMount, entry/attr timeout 1 s\n")
		if r.cfg.refPerm {
			p("- ref mounted with default_permissions (-ref-perm), as geofs always is\n")
		}
		p("- Cold = unmount, sync, drop_caches, mount (both filesystems).\n")
	}
	if replication {
		p("- Replication: fresh sites for every workload and run, each a `geofs mount` daemon with its own store, "+
			"listening on %s (A) and %s (B); the ref column of these rows is the reference named in the workload's description.\n", hostA, hostB)
	}
	p("- Ratio > 1 means geofs is better: geofs/ref for rates, ref/geofs for times and byte counts.\n")
	if r.cfg.runs > 1 {
		p("- %d independent runs (fresh stores each), alternating which filesystem goes first; "+
			"values are medians, ±x%% is half the min–max range.\n", r.cfg.runs)
	}
	if r.cfg.runs%2 == 1 && perTarget {
		p("- Warning: odd -runs, so one filesystem went first more often; on this kind of (virtual) machine " +
			"the first filesystem measured after a fresh start can be markedly slower. Use an even -runs.\n")
	}
	p("\n")

	p("| Workload | Metric | Unit | ref | geofs | geofs vs ref |\n")
	p("|---|---|---|--:|--:|--:|\n")
	for _, res := range r.results {
		if len(res.rows) == 0 {
			p("| %s | — | — | %s | %s | — |\n", res.w.name, errCell(res, "ref"), errCell(res, "geofs"))
			continue
		}
		for _, rw := range res.rows {
			p("| %s | %s | %s | %s | %s | %s |\n", res.w.name, rw.m.name, rw.m.unit,
				r.cell(res, rw, "ref"), r.cell(res, rw, "geofs"), r.ratio(res, rw))
		}
	}

	p("\nWorkloads:\n")
	for _, res := range r.results {
		p("- %s: %s\n", res.w.name, res.w.desc)
	}
	if len(r.notes) > 0 {
		p("\nNotes:\n")
		for _, n := range r.notes {
			p("- %s\n", n)
		}
	}
	if len(r.errs) > 0 {
		p("\nErrors:\n")
		for _, e := range r.errs {
			p("- %s\n", e)
		}
	}
	return sb.String()
}

func errCell(res *wresult, label string) string {
	if res.w.geofsOnly && label == "ref" {
		return "n/a"
	}
	if _, ok := res.errs[label]; ok {
		return "**error**"
	}
	return "—"
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// goFuseVersion returns the go-fuse version the reference helper was built with.
func goFuseVersion(bin string) string {
	if bi, err := buildinfo.ReadFile(bin); err == nil {
		for _, d := range bi.Deps {
			if d.Path == "github.com/hanwen/go-fuse/v2" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func memTotal() string {
	total, err := readMeminfo("MemTotal:")
	if err != nil || total == 0 {
		return "unknown"
	}
	return fmt.Sprintf("%.1f GiB", float64(total)/(1<<30))
}
