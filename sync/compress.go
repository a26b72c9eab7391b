package sync

import (
	"fmt"

	"github.com/klauspost/compress/zstd"
)

// Wire compression: a chunk goes compressed with zstd when that saves at
// least an eighth, judged on its first 64 KiB, else as it is.

var (
	zenc, _ = zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
	zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxFrame))
)

func compress(b []byte) (uint8, []byte) {
	if len(b) < 512 {
		return codecRaw, b
	}
	sample := b[:min(len(b), 64<<10)]
	if len(sample) == len(b) || len(zenc.EncodeAll(sample, nil)) <= len(sample)*7/8 {
		if c := zenc.EncodeAll(b, nil); len(c) <= len(b)*7/8 {
			return codecZstd, c
		}
	}
	return codecRaw, b
}

func decompress(codec uint8, b []byte) ([]byte, error) {
	if codec != codecZstd {
		return b, nil
	}
	out, err := zdec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: zstd: %w", ErrProtocol, err)
	}
	if len(out) > MaxFrame {
		return nil, fmt.Errorf("%w: data decompresses to %d bytes", ErrProtocol, len(out))
	}
	return out, nil
}

// deltaWindow covers a base chunk and a chunk (each at most 16 MiB).
const deltaWindow = 32 << 20

// compressDelta encodes b with base as zstd's dictionary: a chunk that
// differs from base in a few bytes costs a few bytes. (zstd's faster levels
// barely use a dictionary this large: for a 2 MiB chunk with one byte
// changed, 1.9 MiB at the fastest level, 238 bytes at this one, which runs
// at about 200 MB/s here.)
func compressDelta(b, base []byte) ([]byte, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(deltaWindow), zstd.WithEncoderDictRaw(0, base))
	if err != nil {
		return nil, err
	}
	defer enc.Close()
	return enc.EncodeAll(b, nil), nil
}

func decompressDelta(b, base []byte) ([]byte, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(MaxFrame),
		zstd.WithDecoderMaxWindow(deltaWindow), zstd.WithDecoderDictRaw(0, base))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	out, err := dec.DecodeAll(b, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: zstd delta: %w", ErrProtocol, err)
	}
	return out, nil
}

// similar reports whether b and base hold the same bytes at enough of 64
// evenly spread offsets to make a delta worth its CPU (an edit in place;
// an insertion shifts the rest, and the chunk goes whole).
func similar(b, base []byte) bool {
	const samples, width = 64, 32
	n := min(len(b), len(base))
	if n < samples*width {
		return false
	}
	same := 0
	for i := range samples {
		off := i * (n - width) / (samples - 1)
		if string(b[off:off+width]) == string(base[off:off+width]) {
			same++
		}
	}
	return same >= samples/4
}
