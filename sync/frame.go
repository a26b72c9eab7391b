package sync

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Messages on a link stream are frames: a type byte, the payload length
// as an unsigned varint, then the payload. A reader refuses a frame longer
// than its limit before reading it, so a broken or hostile peer costs
// bounded memory, and any malformed frame closes the stream with an
// error wrapping ErrProtocol.

// ErrProtocol marks a peer that broke the wire protocol.
var ErrProtocol = errors.New("protocol violation")

// MaxFrame bounds a frame's payload: room for the largest chunk (16 MiB)
// and its framing.
const MaxFrame = 17 << 20

// WriteFrame writes one frame.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	return writeFrameParts(w, typ, payload, nil)
}

// writeFrameParts writes one frame whose payload is head then body,
// without copying them together (a chunk is megabytes).
func writeFrameParts(w io.Writer, typ byte, head, body []byte) error {
	n := len(head) + len(body)
	if n > MaxFrame {
		return fmt.Errorf("frame of %d bytes is over the %d-byte limit", n, MaxFrame)
	}
	hdr := binary.AppendUvarint([]byte{typ}, uint64(n))
	for _, part := range [][]byte{hdr, head, body} {
		if _, err := w.Write(part); err != nil {
			return fmt.Errorf("write frame: %w", err)
		}
	}
	return nil
}

// ReadFrame reads one frame of at most max payload bytes. At a clean end
// of stream (before a frame starts) it returns io.EOF.
func ReadFrame(r *bufio.Reader, max int) (typ byte, payload []byte, err error) {
	typ, err = r.ReadByte()
	if err != nil {
		return 0, nil, err // io.EOF between frames is a clean end
	}
	n, err := readLength(r)
	if err != nil {
		return 0, nil, err
	}
	if n > uint64(max) {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes is over the %d-byte limit", ErrProtocol, n, max)
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("%w: frame payload: %w", ErrProtocol, unexpected(err))
	}
	return typ, payload, nil
}

// readLength reads a frame length: an unsigned varint in its shortest form
// (every frame has one encoding).
func readLength(r *bufio.Reader) (uint64, error) {
	var buf []byte
	for {
		b, err := r.ReadByte()
		if err != nil {
			return 0, fmt.Errorf("%w: frame length: %w", ErrProtocol, unexpected(err))
		}
		buf = append(buf, b)
		if b < 0x80 {
			break
		}
		if len(buf) == binary.MaxVarintLen64 {
			return 0, fmt.Errorf("%w: frame length too long", ErrProtocol)
		}
	}
	n, k := binary.Uvarint(buf)
	if k != len(buf) || len(binary.AppendUvarint(nil, n)) != k {
		return 0, fmt.Errorf("%w: frame length not in shortest form", ErrProtocol)
	}
	return n, nil
}

// unexpected turns an end of stream inside a frame into an error.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
