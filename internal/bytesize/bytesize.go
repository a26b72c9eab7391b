// Package bytesize reads and writes sizes in bytes the way people write
// them in config.yaml and on the command line: "32MiB", "1GiB", "1.5GiB",
// "1GB", or a plain count of bytes.
//
// Units are case-insensitive, and a space may come between the number and
// the unit:
//
//	B                   1
//	K, Ki, KiB          1024 (so are M, G, T: a letter alone is binary)
//	M, Mi, MiB          1024²
//	G, Gi, GiB          1024³
//	T, Ti, TiB          1024⁴
//	KB, MB, GB, TB      1000, 1000², 1000³, 1000⁴
//
// Note that store.ParseByteSize, used for link rate limits, reads a letter
// alone (10M) as a power of 1000; this package reads it as a power of 1024.
package bytesize

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Binary units.
const (
	KiB int64 = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

// units maps a lower-case unit to its size in bytes.
var units = map[string]int64{
	"": 1, "b": 1,
	"k": KiB, "ki": KiB, "kib": KiB, "kb": 1e3,
	"m": MiB, "mi": MiB, "mib": MiB, "mb": 1e6,
	"g": GiB, "gi": GiB, "gib": GiB, "gb": 1e9,
	"t": TiB, "ti": TiB, "tib": TiB, "tb": 1e12,
}

// maxLen bounds the input Parse looks at, so that a silly string cannot
// cost much; the longest valid size is far shorter.
const maxLen = 64

// Parse reads a size: a whole number of bytes ("1048576"), or a number,
// which may have a fraction, and a unit ("32MiB", "1.5 GiB", "1Gi", "2T",
// "1GB"). A fraction of a byte left by a fractional number is dropped.
// Negative sizes, unknown units and sizes over math.MaxInt64 bytes are
// errors.
func Parse(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty size: want a number of bytes or a size like 32MiB or 1GiB")
	}
	if len(in) > maxLen {
		return 0, fmt.Errorf("%.20q...: too long to be a size", s)
	}
	if in[0] == '-' {
		return 0, fmt.Errorf("%q: a size cannot be negative", s)
	}
	// The number: digits, optionally a '.' and more digits.
	i := 0
	for i < len(in) && isDigit(in[i]) {
		i++
	}
	whole := in[:i]
	frac := ""
	if i < len(in) && in[i] == '.' {
		j := i + 1
		for j < len(in) && isDigit(in[j]) {
			j++
		}
		frac, i = in[i+1:j], j
		if frac == "" {
			return 0, fmt.Errorf("%q is not a size: want digits after the '.', like 1.5GiB", s)
		}
	}
	if whole == "" {
		return 0, fmt.Errorf("%q is not a size: want a number of bytes or a size like 32MiB, 1GiB or 1.5GiB", s)
	}
	rest := strings.TrimLeft(in[i:], " \t")
	unit := strings.ToLower(rest)
	mult, ok := units[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q: want B, K/KiB, M/MiB, G/GiB or T/TiB (powers of 1024), or KB, MB, GB or TB (powers of 1000)", s, rest)
	}
	if frac != "" && mult == 1 {
		return 0, fmt.Errorf("%q: a number of bytes must be whole (or give a larger unit, like 1.5GiB)", s)
	}
	// n = whole.frac × mult, exactly, then rounded down.
	num, _ := new(big.Int).SetString(whole+frac, 10)
	num.Mul(num, big.NewInt(mult))
	if frac != "" {
		num.Quo(num, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
	}
	if !num.IsInt64() {
		return 0, fmt.Errorf("%q is too large: at most %d bytes (8EiB)", s, int64(math.MaxInt64))
	}
	return num.Int64(), nil
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// Format writes n in the largest binary unit that divides it exactly, so
// that Parse reads it back unchanged: "32MiB", "1GiB", "1536KiB", "1000B",
// "0B". (A negative n, which Parse refuses, is written in bytes.)
func Format(n int64) string {
	if n > 0 {
		for _, u := range []struct {
			name string
			size int64
		}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
			if n%u.size == 0 {
				return strconv.FormatInt(n/u.size, 10) + u.name
			}
		}
	}
	return strconv.FormatInt(n, 10) + "B"
}

// Size is a number of bytes that config files write as Format does
// ("32MiB") and may give as a number or a string Parse reads.
type Size int64

// String is Format(s).
func (s Size) String() string { return Format(int64(s)) }

// MarshalText writes Format(s).
func (s Size) MarshalText() ([]byte, error) { return []byte(Format(int64(s))), nil }

// UnmarshalText reads what Parse reads.
func (s *Size) UnmarshalText(b []byte) error {
	n, err := Parse(string(b))
	if err != nil {
		return err
	}
	*s = Size(n)
	return nil
}

// MarshalYAML writes the size as a string, like "32MiB".
func (s Size) MarshalYAML() (any, error) { return Format(int64(s)), nil }

// UnmarshalYAML reads a number of bytes (1073741824) or a string Parse
// reads ("1GiB", "1.5 GiB").
func (s *Size) UnmarshalYAML(node *yaml.Node) error {
	if node.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: want a size like 32MiB or 1GiB, not a list or map", node.Line)
	}
	n, err := Parse(node.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", node.Line, err)
	}
	*s = Size(n)
	return nil
}
