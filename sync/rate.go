package sync

import (
	"io"
	"time"
)

// rateWriter paces writes to at most rate bytes per second (a link's
// rate_limit), allowing bursts of rateBurst worth of time.
type rateWriter struct {
	w    io.Writer
	rate int64
	next time.Time // when the bytes written so far are paid for
}

const rateBurst = 50 * time.Millisecond

func newRateWriter(w io.Writer, rate int64) *rateWriter { return &rateWriter{w: w, rate: rate} }

func (r *rateWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		piece := p[:min(len(p), 16<<10)]
		now := time.Now()
		if r.next.Before(now) {
			r.next = now
		}
		if wait := r.next.Sub(now) - rateBurst; wait > 0 {
			time.Sleep(wait)
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
// unlimited).
func limited(rw io.ReadWriter, rate int64) io.ReadWriter {
	if rate <= 0 {
		return rw
	}
	return struct {
		io.Reader
		io.Writer
	}{rw, newRateWriter(rw, rate)}
}
