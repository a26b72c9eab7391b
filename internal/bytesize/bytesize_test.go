package bytesize

import (
	"encoding"
	"math"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"0", 0}, {"1", 1}, {"1048576", 1 << 20}, {"0B", 0}, {"10B", 10}, {"10b", 10},
		{"512KiB", 512 << 10}, {"512Ki", 512 << 10}, {"512K", 512 << 10}, {"512k", 512 << 10}, {"512kib", 512 << 10},
		{"32MiB", 32 << 20}, {"32Mi", 32 << 20}, {"32M", 32 << 20}, {"32mib", 32 << 20}, {"32MIB", 32 << 20},
		{"1GiB", 1 << 30}, {"1Gi", 1 << 30}, {"1G", 1 << 30}, {"1gi", 1 << 30},
		{"2TiB", 2 << 40}, {"2Ti", 2 << 40}, {"2T", 2 << 40},
		{"1KB", 1e3}, {"1kb", 1e3}, {"1MB", 1e6}, {"1mb", 1e6}, {"1GB", 1e9}, {"2TB", 2e12},
		{"1.5GiB", 3 << 29}, {"1.5 GiB", 3 << 29}, {"1.5G", 3 << 29}, {"0.5KiB", 512}, {"1.5GB", 1.5e9},
		{"1.1KiB", 1126}, // 1126.4: the fraction of a byte is dropped
		{"1 GiB", 1 << 30}, {"1  GiB", 1 << 30}, {" 32MiB ", 32 << 20}, {"007MiB", 7 << 20},
		{"9223372036854775807", math.MaxInt64}, {"8388607TiB", 8388607 << 40},
	} {
		got, err := Parse(c.in)
		if err != nil || got != c.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", "empty"},
		{"   ", "empty"},
		{"-1", "negative"},
		{"-1GiB", "negative"},
		{"abc", "not a size"},
		{"GiB", "not a size"},
		{".5GiB", "not a size"},
		{"1.GiB", "digits after"},
		{"1.5", "whole"},
		{"1.5B", "whole"},
		{"10XB", `unknown unit "XB"`},
		{"1PiB", `unknown unit "PiB"`},
		{"1 G B", "unknown unit"},
		{"1e9", "unknown unit"},
		{"0x10", "unknown unit"},
		{"+1", "not a size"},
		{"1,5GiB", "unknown unit"},
		{"9223372036854775808", "too large"},
		{"8388608TiB", "too large"},
		{"9999999999999999999999GiB", "too large"},
		{strings.Repeat("1", 100), "too long"},
	} {
		got, err := Parse(c.in)
		if err == nil {
			t.Errorf("Parse(%q) = %d, want an error", c.in, got)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q): error %q does not say %q", c.in, err, c.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("Parse(%q): error %q is not one line", c.in, err)
		}
	}
}

func TestFormat(t *testing.T) {
	for _, c := range []struct {
		in   int64
		want string
	}{
		{0, "0B"}, {1, "1B"}, {1000, "1000B"}, {1023, "1023B"}, {1024, "1KiB"}, {1536, "1536B"},
		{1536 << 10, "1536KiB"}, {512 << 10, "512KiB"}, {32 << 20, "32MiB"}, {1 << 30, "1GiB"},
		{3 << 29, "1536MiB"}, {2 << 40, "2TiB"}, {1 << 50, "1024TiB"}, {1e9, "1000000000B"}, {1e6, "1000000B"},
		{math.MaxInt64, "9223372036854775807B"}, {-5, "-5B"},
	} {
		if got := Format(c.in); got != c.want {
			t.Errorf("Format(%d) = %q, want %q", c.in, got, c.want)
		}
		if got := Size(c.in).String(); got != c.want {
			t.Errorf("Size(%d).String() = %q, want %q", c.in, got, c.want)
		}
	}
}

var _ interface {
	yaml.Marshaler
	encoding.TextMarshaler
} = Size(0)

var _ interface {
	yaml.Unmarshaler
	encoding.TextUnmarshaler
} = (*Size)(nil)

type doc struct {
	Size Size `yaml:"size,omitempty"`
}

func TestSizeYAML(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Size
	}{
		{"size: 1073741824\n", 1 << 30},
		{"size: 1GiB\n", 1 << 30},
		{"size: \"1 GiB\"\n", 1 << 30},
		{"size: 32M\n", 32 << 20},
		{"size: 1.5GiB\n", 3 << 29},
		{"size: 1GB\n", 1e9},
		{"size: 0\n", 0},
		{"{}\n", 0},
	} {
		var d doc
		if err := yaml.Unmarshal([]byte(c.in), &d); err != nil || d.Size != c.want {
			t.Errorf("yaml %q: %d, %v; want %d", c.in, d.Size, err, c.want)
		}
	}
	for _, in := range []string{"size: -1\n", "size: lots\n", "size: 1.5\n", "size: [1]\n", "size: 1e9\n", "size: 10PB\n"} {
		var d doc
		err := yaml.Unmarshal([]byte(in), &d)
		if err == nil {
			t.Errorf("yaml %q: read %d, want an error", in, d.Size)
		} else if !strings.Contains(err.Error(), "line 1") {
			t.Errorf("yaml %q: error %q does not give the line", in, err)
		}
	}
	for _, c := range []struct {
		in   Size
		want string
	}{{32 << 20, "size: 32MiB\n"}, {1 << 30, "size: 1GiB\n"}, {1000, "size: 1000B\n"}, {0, "{}\n"}} {
		b, err := yaml.Marshal(doc{c.in})
		if err != nil || string(b) != c.want {
			t.Errorf("yaml.Marshal(%d) = %q, %v; want %q", c.in, b, err, c.want)
		}
		var back doc
		if err := yaml.Unmarshal(b, &back); err != nil || back.Size != c.in {
			t.Errorf("yaml round trip of %d: %d, %v", c.in, back.Size, err)
		}
	}
}

func TestSizeText(t *testing.T) {
	b, err := Size(1536 << 10).MarshalText()
	if err != nil || string(b) != "1536KiB" {
		t.Errorf("MarshalText = %q, %v", b, err)
	}
	var s Size
	if err := s.UnmarshalText([]byte("2Gi")); err != nil || s != 2<<30 {
		t.Errorf("UnmarshalText(2Gi) = %d, %v", s, err)
	}
	if err := s.UnmarshalText([]byte("-2")); err == nil {
		t.Errorf("UnmarshalText(-2) = %d, want an error", s)
	}
}

// FuzzParse: Parse never panics, reads what Format writes back exactly,
// and whatever it accepts is a non-negative size that survives a round trip.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0", "1", "32MiB", "1.5 GiB", "1GB", "2T", "-1", "1e9", ".5", "9223372036854775807", "8388608TiB"} {
		f.Add(s, int64(len(s))<<20)
	}
	f.Add("", int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		if n >= 0 {
			if back, err := Parse(Format(n)); err != nil || back != n {
				t.Errorf("Parse(Format(%d) = %q) = %d, %v", n, Format(n), back, err)
			}
		}
		got, err := Parse(s)
		if err != nil {
			return
		}
		if got < 0 {
			t.Fatalf("Parse(%q) = %d, negative", s, got)
		}
		if back, err := Parse(Format(got)); err != nil || back != got {
			t.Errorf("Parse(Format(%d) = %q) = %d, %v", got, Format(got), back, err)
		}
	})
}
