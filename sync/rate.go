package sync

import (
	"context"
	"io"
	"time"
)

// rateWriter paces writes to at most rate bytes per second (a link's
// rate_limit), allowing bursts of rateBurst worth of time. A wait ends
// early, with ctx's error, when ctx ends (a pause can last 16 s at 1 KiB/s,
// and must not hold up a shutdown).
type rateWriter struct {
	ctx  context.Context
	w    io.Writer
	rate int64
	next time.Time // when the bytes written so far are paid for
}

const rateBurst = 50 * time.Millisecond

func newRateWriter(ctx context.Context, w io.Writer, rate int64) *rateWriter {
	return &rateWriter{ctx: ctx, w: w, rate: rate}
}

func (r *rateWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), 16<<10)]
		now := time.Now()
		if r.next.Before(now) {
			r.next = now
		}
		if wait := r.next.Sub(now) - rateBurst; wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-r.ctx.Done():
				t.Stop()
				return written, r.ctx.Err()
			}
		}
		n, err := r.w.Write(piece)
		written += n
		r.next = r.next.Add(time.Duration(int64(n) * int64(time.Second) / r.rate))
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// limited returns rw with its writes paced to rate bytes per second (0:
// unlimited) until ctx ends.
func limited(ctx context.Context, rw io.ReadWriter, rate int64) io.ReadWriter {
	if rate <= 0 {
		return rw
	}
	return struct {
		io.Reader
		io.Writer
	}{rw, newRateWriter(ctx, rw, rate)}
}
