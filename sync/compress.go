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
