// Command geofs-relay forwards UDP to a geofs site while injecting WAN
// faults (delay, jitter, loss, reordering, a rate limit), for trying out
// replication over a bad network by hand. Point a peer at -listen instead
// of the site's own address. The faults apply to each direction, so -delay
// 20ms adds 40ms to the round trip.
//
//	geofs-relay -listen 127.0.0.5:7000 -target 127.0.0.2:7000 -delay 20ms -loss 0.01 -rate 10MB
//
// It runs until SIGINT or SIGTERM, logging the packet counters every -stats.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/geofs/geofs/internal/relay"
)

func main() {
	os.Exit(run())
}

func run() int {
	var f relay.Faults
	listen := flag.String("listen", "127.0.0.1:0", "UDP address to listen on (HOST:PORT)")
	target := flag.String("target", "", "UDP address to forward to (HOST:PORT, required)")
	flag.DurationVar(&f.Delay, "delay", 0, "one-way delay added in each direction")
	flag.DurationVar(&f.Jitter, "jitter", 0, "random variation of the delay, ± this much")
	flag.Float64Var(&f.Loss, "loss", 0, "probability (0..1) that a packet is dropped")
	flag.Float64Var(&f.Reorder, "reorder", 0, "probability (0..1) that a packet is sent after the next one")
	flag.Var((*byteSize)(&f.Rate), "rate", "bandwidth per direction in `bytes` per second, such as 10MB, 512KiB or 100mbit (0: unlimited)")
	flag.Var((*byteSize)(&f.Queue), "queue", "`bytes` that may wait for the rate limit before packets are dropped (0: twice the bandwidth-delay product, at least 64KiB)")
	seed := flag.Uint64("seed", 0, "seed for the random faults, to repeat a run (default: random)")
	every := flag.Duration("stats", 10*time.Second, "how often to log packet counters (0: only at exit)")
	flag.Parse()

	if err := check(*target, f); err != nil || flag.NArg() > 0 {
		if err != nil {
			fmt.Fprintln(os.Stderr, "geofs-relay:", err)
		}
		flag.Usage()
		return 2
	}
	r, err := start(*listen, *target, *seed)
	if err != nil {
		slog.Error("cannot start relay", "err", err)
		return 1
	}
	r.Set(relay.Both(f))
	slog.Info("relaying", "listen", r.Addr(), "target", *target, "delay", f.Delay, "jitter", f.Jitter,
		"loss", f.Loss, "reorder", f.Reorder, "rate", f.Rate, "queue", f.Queue)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logStats(ctx, r, *every)
	r.Close()
	slog.Info("stopped", stats(r.Stats())...)
	return 0
}

// check validates the flags.
func check(target string, f relay.Faults) error {
	switch {
	case target == "":
		return fmt.Errorf("-target is required")
	case f.Delay < 0 || f.Jitter < 0:
		return fmt.Errorf("-delay and -jitter cannot be negative")
	case f.Loss < 0 || f.Loss > 1:
		return fmt.Errorf("-loss %v is not between 0 and 1", f.Loss)
	case f.Reorder < 0 || f.Reorder > 1:
		return fmt.Errorf("-reorder %v is not between 0 and 1", f.Reorder)
	}
	return nil
}

// start opens the relay, seeded if -seed was given.
func start(listen, target string, seed uint64) (*relay.Relay, error) {
	seeded := false
	flag.Visit(func(f *flag.Flag) { seeded = seeded || f.Name == "seed" })
	if seeded {
		return relay.NewWithSeed(listen, target, seed)
	}
	return relay.New(listen, target)
}

// logStats logs the counters every interval until ctx is done.
func logStats(ctx context.Context, r *relay.Relay, every time.Duration) {
	if every <= 0 {
		<-ctx.Done()
		return
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			slog.Info("stats", stats(r.Stats())...)
		}
	}
}

// stats are the counters as slog attributes.
func stats(s relay.Stats) []any {
	return []any{
		slog.Group("up", "packets", s.Up.Packets, "bytes", s.Up.Bytes, "dropped", s.Up.Dropped),
		slog.Group("down", "packets", s.Down.Packets, "bytes", s.Down.Bytes, "dropped", s.Down.Dropped),
	}
}

// byteSize is a flag holding a byte count with an optional unit: B, KB, MB,
// GB (powers of 1000), KiB, MiB, GiB (powers of 1024) or kbit, mbit, gbit
// (bits), case-insensitive, with an optional "/s".
type byteSize int64

// units are the suffixes byteSize understands, longest first.
var units = []struct {
	suffix string
	bytes  float64
}{
	{"kbit", 1e3 / 8}, {"mbit", 1e6 / 8}, {"gbit", 1e9 / 8},
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9},
	{"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1},
}

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *byteSize) Set(s string) error {
	num := strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), "/s")
	mult := 1.0
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.bytes
			break
		}
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || !(v >= 0 && v*mult <= 1<<62) { // also refuses NaN and Inf
		return fmt.Errorf("%q is not a byte size such as 10MB, 512KiB or 100mbit", s)
	}
	*b = byteSize(v * mult)
	return nil
}
