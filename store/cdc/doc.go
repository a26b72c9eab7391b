// Package cdc splits byte streams into content-defined chunks with FastCDC
// (Xia et al., "FastCDC: a Fast and Efficient Content-Defined Chunking
// Approach for Data Deduplication", USENIX ATC 2016, and the 2020 TPDS
// extension).
//
// # Algorithm
//
// A gear rolling hash is computed over the chunk, one byte at a time:
//
//	h = h<<1 + gear[b]
//
// Because of the shift, a bit k of h depends only on the last k+1 bytes, so
// the high bits of h act as a 64-byte sliding window without ever removing
// bytes explicitly. A chunk ends after the first byte at which h&mask == 0.
//
// Chunking follows the FastCDC rules:
//
//   - cut-point skipping: the first Min bytes of a chunk are not hashed (h
//     starts at zero at offset Min), so no chunk is shorter than Min;
//   - normalized chunking (level 2): between Min and Avg a strict mask with
//     log2(Avg)+2 bits is used, after Avg a loose mask with log2(Avg)-2 bits,
//     which concentrates chunk sizes around Avg;
//   - a chunk is forcibly cut at Max bytes.
//
// Masks use the most significant bits of h, which depend on the most bytes.
//
// A boundary depends only on the bytes from the start of the chunk, so after
// an insertion or deletion chunking resynchronises within a chunk or two and
// the following chunks (and their hashes) are unchanged.
//
// # On-disk format
//
// Chunk boundaries are part of geofs's on-disk format: the gear table
// (gear.go), the mask widths and placement, and the Min/Avg/Max values all
// determine where chunks end. Changing any of them changes essentially every
// boundary and defeats deduplication against data already stored. The golden
// vectors in cdc_test.go pin the current behaviour.
package cdc
