package schema

import (
	"bytes"
	"encoding/csv"
	"fmt"
	"io"
	"testing"
	"time"
)

// benchCSV returns the records of benchStudents as CSV rows (about 600
// bytes of JSON, a little less as CSV, per record).
func benchCSV(tb testing.TB, n int) []byte {
	recs, _ := benchStudents(tb, n)
	st, _ := Default().Type("student")
	var header []string
	for _, f := range st.Fields() {
		if _, ok := recs[0].Fields[f.Name]; ok {
			header = append(header, f.Name)
		}
	}
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write(header)
	row := make([]string, len(header))
	for _, r := range recs {
		for i, name := range header {
			row[i] = fmt.Sprint(r.Fields[name])
		}
		w.Write(row)
	}
	w.Flush()
	return buf.Bytes()
}

// benchEdFi returns n Ed-Fi Student elements of about 600 bytes each.
func benchEdFi(n int) []byte {
	var buf bytes.Buffer
	buf.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n" + `<InterchangeStudent xmlns="http://ed-fi.org/5.2.0">` + "\n")
	for i := range n {
		fmt.Fprintf(&buf, `	<Student>
		<StudentUniqueId>%d</StudentUniqueId>
		<Name>
			<PersonalTitlePrefix>Ms</PersonalTitlePrefix>
			<FirstName>Lisa</FirstName>
			<MiddleName>Sybil</MiddleName>
			<LastSurname>Woods</LastSurname>
			<PreferredFirstName>Lisarae</PreferredFirstName>
			<PreferredLastSurname>Woodlock</PreferredLastSurname>
		</Name>
		<BirthData>
			<BirthDate>%04d-%02d-%02d</BirthDate>
			<BirthSex>uri://ed-fi.org/SexDescriptor#Female</BirthSex>
			<BirthCity>Grand Bend</BirthCity>
		</BirthData>
		<PersonReference><PersonIdentity><PersonId>%d</PersonId><SourceSystem>uri://ed-fi.org/SourceSystemDescriptor#District</SourceSystem></PersonIdentity></PersonReference>
	</Student>
`, 604821+i, 2005+i%15, 1+i%12, 1+i%28, 604821+i)
	}
	buf.WriteString("</InterchangeStudent>\n")
	return buf.Bytes()
}

// benchReader measures reading, classifying and writing the output line
// of every record of data, as classify does.
func benchReader(b *testing.B, data []byte, n int, open func(io.Reader) Reader) {
	std := Default()
	asOf := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ReportMetric(float64(len(data))/float64(n), "bytes/record")
	records := 0
	var out []byte
	for b.Loop() {
		r := open(bytes.NewReader(data))
		for {
			rec, idx, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			l, err := std.Classify(rec, asOf)
			if err != nil {
				b.Fatal(err)
			}
			out = l.AppendJSON(out[:0], idx, l.ID)
			records++
		}
	}
	if records != n*b.N {
		b.Fatalf("%d records, want %d", records, n*b.N)
	}
	b.ReportMetric(float64(records)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkCSVClassify(b *testing.B) {
	const n = 1000
	data := benchCSV(b, n)
	benchReader(b, data, n, func(r io.Reader) Reader {
		cr, err := NewCSVReader(Default(), r, "student")
		if err != nil {
			b.Fatal(err)
		}
		return cr
	})
}

func BenchmarkEdFiClassify(b *testing.B) {
	const n = 1000
	data := benchEdFi(n)
	benchReader(b, data, n, func(r io.Reader) Reader {
		er, err := NewEdFiReader(r, "")
		if err != nil {
			b.Fatal(err)
		}
		return er
	})
}
