package sync

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"testing"
)

func TestFramesOverAPipe(t *testing.T) {
	a, b := net.Pipe()
	go func() {
		WriteFrame(a, 1, []byte("hello"))
		WriteFrame(a, 2, nil)
		WriteFrame(a, 3, bytes.Repeat([]byte{7}, 100_000))
		a.Close()
	}()
	r := bufio.NewReader(b)
	for _, want := range []struct {
		typ byte
		n   int
	}{{1, 5}, {2, 0}, {3, 100_000}} {
		typ, p, err := ReadFrame(r, MaxFrame)
		if err != nil || typ != want.typ || len(p) != want.n {
			t.Fatalf("frame: type %d, %d bytes, %v; want type %d, %d bytes", typ, len(p), err, want.typ, want.n)
		}
	}
	if _, _, err := ReadFrame(r, MaxFrame); err != io.EOF {
		t.Fatalf("after the last frame: %v, want io.EOF", err)
	}
}

func TestReadFrameRefusesBadFrames(t *testing.T) {
	for name, in := range map[string][]byte{
		"over the limit":     {1, 0xff, 0xff, 0xff, 0x7f},
		"cut in the length":  {1, 0x80},
		"cut in payload":     {1, 5, 'a', 'b'},
		"bad varint":         {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01},
		"non-minimal length": {1, 0x80, 0x00},
	} {
		_, _, err := ReadFrame(bufio.NewReader(bytes.NewReader(in)), 1<<20)
		if !errors.Is(err, ErrProtocol) {
			t.Errorf("%s: err = %v, want ErrProtocol", name, err)
		}
	}
}

func TestWriteFrameRefusesHugePayload(t *testing.T) {
	if err := WriteFrame(io.Discard, 1, make([]byte, MaxFrame+1)); err == nil {
		t.Fatal("wrote a frame over the limit")
	}
}

func FuzzReadFrame(f *testing.F) {
	var buf bytes.Buffer
	WriteFrame(&buf, 4, []byte("payload"))
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			typ, p, err := ReadFrame(r, 1<<16)
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrProtocol) {
					t.Fatalf("unclassified error %v", err)
				}
				return
			}
			var out bytes.Buffer
			WriteFrame(&out, typ, p)
			if !bytes.HasPrefix(in, out.Bytes()[:1]) && len(in) > 0 {
				t.Fatal("frame type not read from the start")
			}
			in = in[out.Len():]
		}
	})
}
