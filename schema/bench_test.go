package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"
)

// benchStudents returns n student records of about 600 bytes of JSON each.
func benchStudents(tb testing.TB, n int) ([]Record, []byte) {
	var buf bytes.Buffer
	for i := range n {
		d17 := fmt.Sprintf("110105%04d0%d%02d%03d", 1990+i%30, 1+i%9, 1+i%28, i%1000)
		fmt.Fprintf(&buf, `{"type":"student","student_id":"2023%06d","name":"张三丰","name_pinyin":"Zhang Sanfeng",`+
			`"gender":"男","birth_date":"%s-0%s-%s","id_type":"resident_id","id_number":"%s",`+
			`"exam_number":"23110105150%05d","ethnicity":"汉族","political_status":"共青团员","email":"zhang%d@example.edu.cn",`+
			`"campus_card_no":"C%08d","nationality":"中国","native_place":"北京市东城区","hukou_type":"城镇",`+
			`"address":"北京市海淀区颐和园路%d号","postal_code":"100871","phone":"13812345678","dormitory":"燕园 %d 楼 %d 室",`+
			`"notes":"学习认真，积极参加社团活动。家长电话 13987654321。"}`+"\n",
			i, d17[6:10], d17[11:12], d17[12:14], residentID(tb, d17), i, i, i, i, i%40, i%500)
	}
	r := NewNDJSONReader(bytes.NewReader(buf.Bytes()), "")
	var recs []Record
	for {
		rec, _, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
		recs = append(recs, rec)
	}
	return recs, buf.Bytes()
}

func BenchmarkClassifyStudent(b *testing.B) {
	recs, data := benchStudents(b, 1000)
	std := Default()
	asOf := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, r := range recs {
		if _, err := std.Classify(r, asOf); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(data) / len(recs)))
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := std.Classify(recs[i%len(recs)], asOf); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "records/s")
}

// BenchmarkNDJSONClassify measures the whole offline path: read a line,
// decode it, classify it and write the output line.
func BenchmarkNDJSONClassify(b *testing.B) {
	_, data := benchStudents(b, 1000)
	std := Default()
	asOf := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	n := 0
	var out []byte
	for b.Loop() {
		r := NewNDJSONReader(bytes.NewReader(data), "student")
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
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
	_ = json.Valid(out)
}

// BenchmarkParseRow measures the sender's parse of one line into a Row,
// and BenchmarkMembers the receiver's check of a line's member names.
func BenchmarkParseRow(b *testing.B) {
	_, data := benchStudents(b, 1000)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	std := Default()
	var p LineParser
	p.ShareLines() // as node.Send parses
	var row Row
	b.SetBytes(int64(len(data) / len(lines)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := p.ParseRow(lines[i%len(lines)], std, &row); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkMembers(b *testing.B) {
	_, data := benchStudents(b, 1000)
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	var p LineParser
	names := 0
	b.SetBytes(int64(len(data) / len(lines)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, ok := p.Members(lines[i%len(lines)], func(string, []byte) { names++ }); !ok {
			b.Fatal("a bench line refused")
		}
		i++
	}
	b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "records/s")
}
