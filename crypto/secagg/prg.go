package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
)

// Masks are expanded from a 32-byte key with AES-256 in counter mode from a
// zero IV: the keystream, read as little-endian uint64s, is the mask. Every
// key is derived with HKDF-SHA256 under the round digest as salt and a label
// naming its use and the participants' indices, so no key (and no
// keystream) serves two rounds, two pairs, or a pair and a self mask.

// pairKey derives the key of the pairwise mask between participants lo < hi
// from their agreed Ristretto255 point.
func pairKey(ctx *[32]byte, point []byte, lo, hi int) []byte {
	info := binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte(labelPair), uint16(lo)), uint16(hi))
	k, err := hkdf.Key(sha256.New, point, ctx[:], string(info), 32)
	if err != nil {
		panic("secagg: hkdf: " + err.Error()) // only for lengths above 255·32
	}
	return k
}

// selfKey derives the key of participant i's self mask from its seed.
func selfKey(ctx *[32]byte, seed []byte, i int) []byte {
	info := binary.BigEndian.AppendUint16([]byte(labelSelf), uint16(i))
	k, err := hkdf.Key(sha256.New, seed, ctx[:], string(info), 32)
	if err != nil {
		panic("secagg: hkdf: " + err.Error())
	}
	return k
}

// expander adds masks to vectors, reusing one keystream buffer.
type expander struct{ buf []byte }

// add adds (sub false) or subtracts (sub true) the mask expanded from key
// to dst, modulo 2⁶⁴, and clears key.
func (e *expander) add(dst []uint64, key []byte, sub bool) {
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		panic("secagg: aes: " + err.Error()) // key is always 32 bytes
	}
	const chunk = 4096 // uint64s per keystream chunk
	if cap(e.buf) < 8*chunk {
		e.buf = make([]byte, 8*chunk)
	}
	var iv [aes.BlockSize]byte
	ctr := cipher.NewCTR(block, iv[:])
	for off := 0; off < len(dst); off += chunk {
		d := dst[off:min(off+chunk, len(dst))]
		buf := e.buf[:8*len(d)]
		clear(buf)
		ctr.XORKeyStream(buf, buf)
		if sub {
			for i := range d {
				d[i] -= binary.LittleEndian.Uint64(buf[8*i:])
			}
		} else {
			for i := range d {
				d[i] += binary.LittleEndian.Uint64(buf[8*i:])
			}
		}
	}
	clear(e.buf)
}
