// Command quicref is the network reference of the geofs replication
// benchmarks: a raw quic-go stream between two processes, over geofs's own
// transport (sync.Listen and sync.Dial, so the same QUIC settings and the
// same TLS 1.3 handshake on ed25519 site keys), with nothing of geofs's
// protocol, store or filesystem on either side.
//
//	quicref -listen 127.0.0.101:0 [-pings 1000] [-size 2GiB]
//
// It starts a copy of itself as the receiving process (-serve), listening on
// -listen, then dials it as the sending process and
//
//   - with -pings N: sends N one-byte pings on one stream, each answered by
//     the receiver, and reports the round-trip times (p50, p99, min);
//   - with -size N: sends N bytes on one stream (1 MiB writes) and reports
//     the throughput, timed from the first write until the receiver has
//     acknowledged the last byte.
//
// The result is one JSON object on stdout (see result). Both site keys are
// fresh ed25519 keys; the receiver admits any peer, the sender insists on the
// receiver's key, as a geofs link does. The sender binds the wildcard
// address (sync.Dial does), so the kernel picks its source address, as it
// does for a geofs site dialing a link.
package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/geofs/geofs/store"
	gsync "github.com/geofs/geofs/sync"
)

// result is what quicref prints on stdout.
type result struct {
	ListenAddr string `json:"listen_addr"`
	// Throughput (-size).
	Bytes     int64   `json:"bytes,omitempty"`
	Seconds   float64 `json:"seconds,omitempty"`
	MiBPerSec float64 `json:"mib_per_s,omitempty"`
	MBPerSec  float64 `json:"mb_per_s,omitempty"`
	// Round trips (-pings).
	Pings     int     `json:"pings,omitempty"`
	RTTP50Ms  float64 `json:"rtt_p50_ms,omitempty"`
	RTTP99Ms  float64 `json:"rtt_p99_ms,omitempty"`
	RTTMinMs  float64 `json:"rtt_min_ms,omitempty"`
	Handshake float64 `json:"handshake_ms,omitempty"`
}

// Stream kinds: the first byte the sender writes on a stream.
const (
	kindPing = 'P'
	kindBulk = 'B'
)

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)).With("prog", "quicref"))
	listen := flag.String("listen", "127.0.0.1:0", "UDP address the receiving process listens on")
	pings := flag.Int("pings", 0, "round trips to time on one stream")
	var size sizeFlag
	flag.Var(&size, "size", "bytes to send on one stream (e.g. 2GiB)")
	serve := flag.Bool("serve", false, "internal: run as the receiving process")
	flag.Parse()

	var err error
	if *serve {
		err = runReceiver(*listen)
	} else {
		err = runSender(*listen, *pings, int64(size))
	}
	if err != nil {
		slog.Error("failed", "err", err)
		os.Exit(1)
	}
}

func newIdentity() (*gsync.Identity, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	return gsync.NewIdentity(key)
}

// ---------------------------------------------------------------------------
// Receiving process

// runReceiver listens, prints "ADDR SITE_ID" on stdout, and serves one
// connection: pings are echoed, a bulk stream is read to its end and
// answered with the byte count. It exits when the connection ends.
func runReceiver(listen string) error {
	id, err := newIdentity()
	if err != nil {
		return err
	}
	ln, err := gsync.Listen(listen, id, func(store.SiteID) error { return nil })
	if err != nil {
		return err
	}
	defer ln.Close()
	fmt.Printf("%s %s\n", ln.Addr(), id.Site)

	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	conn, err := ln.Accept(ctx)
	if err != nil {
		return err
	}
	defer conn.Close("done")
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return nil // the sender closed the connection
		}
		go func() {
			defer st.Close()
			if err := serveStream(st); err != nil {
				slog.Error("stream", "err", err)
			}
		}()
	}
}

func serveStream(st io.ReadWriter) error {
	var kind [1]byte
	if _, err := io.ReadFull(st, kind[:]); err != nil {
		return err
	}
	switch kind[0] {
	case kindPing:
		var b [1]byte
		for {
			if _, err := io.ReadFull(st, b[:]); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if _, err := st.Write(b[:]); err != nil {
				return err
			}
		}
	case kindBulk:
		n, err := io.Copy(io.Discard, st)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(st, "%d\n", n)
		return err
	}
	return fmt.Errorf("unknown stream kind %q", kind[0])
}

// ---------------------------------------------------------------------------
// Sending process

func runSender(listen string, pings int, size int64) error {
	if pings <= 0 && size <= 0 {
		return errors.New("give -pings and/or -size")
	}
	addr, peer, stop, err := startReceiver(listen)
	if err != nil {
		return err
	}
	defer stop()

	id, err := newIdentity()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	start := time.Now()
	conn, err := gsync.Dial(ctx, addr, id, peer)
	if err != nil {
		return err
	}
	defer conn.Close("done")
	res := result{ListenAddr: addr, Handshake: ms(time.Since(start))}
	slog.Info("connected", "addr", addr, "handshake", time.Since(start))

	if pings > 0 {
		rtts, err := ping(ctx, conn, pings)
		if err != nil {
			return fmt.Errorf("pings: %w", err)
		}
		slices.Sort(rtts)
		res.Pings = pings
		res.RTTMinMs = ms(rtts[0])
		res.RTTP50Ms = ms(percentile(rtts, 50))
		res.RTTP99Ms = ms(percentile(rtts, 99))
	}
	if size > 0 {
		d, err := bulk(ctx, conn, size)
		if err != nil {
			return fmt.Errorf("bulk: %w", err)
		}
		res.Bytes, res.Seconds = size, d.Seconds()
		res.MiBPerSec = float64(size) / (1 << 20) / d.Seconds()
		res.MBPerSec = float64(size) / 1e6 / d.Seconds()
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// startReceiver runs this program with -serve and returns the address and
// site id it printed, and a function that waits for it to exit.
func startReceiver(listen string) (addr string, peer store.SiteID, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", peer, nil, err
	}
	cmd := exec.Command(self, "-serve", "-listen", listen)
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", peer, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", peer, nil, err
	}
	stop = func() {
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	f := strings.Fields(line)
	if err != nil || len(f) != 2 {
		cmd.Process.Kill()
		stop()
		return "", peer, nil, fmt.Errorf("receiver did not start (said %q): %v", line, err)
	}
	if peer, err = store.ParseSiteID(f[1]); err != nil {
		cmd.Process.Kill()
		stop()
		return "", peer, nil, err
	}
	return f[0], peer, stop, nil
}

func ping(ctx context.Context, conn *gsync.Conn, n int) ([]time.Duration, error) {
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if _, err := st.Write([]byte{kindPing}); err != nil {
		return nil, err
	}
	rtts := make([]time.Duration, 0, n)
	b := []byte{0}
	for i := 0; i < n; i++ {
		start := time.Now()
		if _, err := st.Write(b); err != nil {
			return nil, err
		}
		if _, err := io.ReadFull(st, b); err != nil {
			return nil, err
		}
		rtts = append(rtts, time.Since(start))
	}
	return rtts, nil
}

// bulk sends size bytes on one stream and waits for the receiver to confirm
// it read them all.
func bulk(ctx context.Context, conn *gsync.Conn, size int64) (time.Duration, error) {
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	rand.Read(buf) // content does not matter to QUIC; random anyway
	start := time.Now()
	if _, err := st.Write([]byte{kindBulk}); err != nil {
		return 0, err
	}
	for sent := int64(0); sent < size; {
		n := min(int64(len(buf)), size-sent)
		if _, err := st.Write(buf[:n]); err != nil {
			return 0, err
		}
		sent += n
	}
	// End the send direction only (sync's streams close both on Close).
	if err := st.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return 0, err
	}
	line, err := bufio.NewReader(st).ReadString('\n')
	d := time.Since(start)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, err
	}
	got, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil || got != size {
		return 0, fmt.Errorf("receiver read %q bytes, want %d", strings.TrimSpace(line), size)
	}
	return d, nil
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted)-1) * p / 100)
	return sorted[i]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sizeFlag parses 2GiB, 256MiB, 4KiB or a plain byte count.
type sizeFlag int64

func (f *sizeFlag) String() string { return strconv.FormatInt(int64(*f), 10) }

func (f *sizeFlag) Set(s string) error {
	mult := int64(1)
	for _, sf := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if strings.HasSuffix(s, sf.suffix) {
			s, mult = strings.TrimSuffix(s, sf.suffix), sf.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("bad size %q", s)
	}
	*f = sizeFlag(n * mult)
	return nil
}
