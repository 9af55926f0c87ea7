package linkage

import (
	"context"
	"fmt"
	"testing"
)

// checkedID completes 17 digits with their check character.
func checkedID(body17 string) string {
	sum := 0
	for i, c := range body17 {
		sum += int(c-'0') * residentIDWeights[i]
	}
	return body17 + string("10X98765432"[sum%11])
}

var residentIDWeights = []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}

// xID is a resident id whose check character is X.
func xID(t *testing.T) string {
	for i := range 1000 {
		id := checkedID(fmt.Sprintf("11010120040101%03d", i))
		if id[17] == 'X' {
			return id
		}
	}
	t.Fatal("no resident id with check character X")
	return ""
}

// TestCollect: the records linkage reads are normalised (trimmed, x
// upper-cased), and malformed, missing and duplicate ids are counted and
// left out, whatever ingest let through.
func TestCollect(t *testing.T) {
	id1, id2, id3 := checkedID("11010120040101123"), checkedID("11010120040102123"), checkedID("11010120040103123")
	x := xID(t)
	bad := id1[:17] + map[bool]string{true: "0", false: "1"}[id1[17] != '0']
	bodies := []string{
		fmt.Sprintf(`{"student_id":"S1","id_type":"resident_id","id_number":%q}`, id1),                             // kept
		fmt.Sprintf(`{"student_id":"S2","id_number":"  %s "}`, id2),                                                // kept, trimmed
		fmt.Sprintf(`{"student_id":"S3","id_type":"resident_id","id_number":%q}`, x[:17]+"x"),                      // kept, X upper-cased
		fmt.Sprintf(`{"student_id":"S4","id_type":"resident_id","id_number":%q}`, bad),                             // malformed: check
		`{"student_id":"S5","id_type":"resident_id","id_number":"11010120041301123X"}`,                             // malformed: month 13
		`{"student_id":"S6","id_type":"passport","id_number":"E1234567"}`,                                          // missing
		`{"student_id":"S7","id_type":"resident_id"}`,                                                              // missing
		`{"id_type":"resident_id","id_number":"x"}`,                                                                // malformed: no student
		fmt.Sprintf(`{"student_id":"S8","id_type":"resident_id","id_number":%q}`, id3),                             // duplicate: S8 and S9 share id3
		fmt.Sprintf(`{"student_id":"S9","id_type":"resident_id","id_number":%q}`, id3),                             //
		fmt.Sprintf(`{"student_id":"S10","id_type":"resident_id","id_number":%q}`, checkedID("11010119990101001")), // duplicate: S10 has two ids
		fmt.Sprintf(`{"student_id":"S10","id_type":"resident_id","id_number":%q}`, checkedID("11010119990101002")),
		fmt.Sprintf(`{"student_id":"S1","id_type":"resident_id","id_number":%q}`, id1), // S1 again: kept once
	}
	s := &Service{d: Deps{ScanRecords: func(_ context.Context, typ string, fn func(string, []byte) error) error {
		if typ != "student" {
			t.Fatalf("scanned %q", typ)
		}
		for _, b := range bodies {
			if err := fn("", []byte(b)); err != nil {
				return err
			}
		}
		return nil
	}}}
	var rep Report
	people, err := s.collect(context.Background(), &rep)
	if err != nil {
		t.Fatal(err)
	}
	want := []person{{"S1", id1}, {"S2", id2}, {"S3", x}}
	if fmt.Sprint(people) != fmt.Sprint(want) {
		t.Errorf("people\n got %v\nwant %v", people, want)
	}
	if rep.Records != 13 || rep.Malformed != 3 || rep.Missing != 2 || rep.Duplicate != 5 {
		t.Errorf("report %+v: want 13 records, 3 malformed, 2 missing, 5 duplicate", rep)
	}
}

// TestChunkSize: chunks fill at most half the server's maximum payload,
// in whole parts.
func TestChunkSize(t *testing.T) {
	for _, tc := range []struct {
		payload     int64
		part, chunk int
	}{
		{1 << 20, 1024, 12288}, {8 << 20, 1024, MaxChunk}, {0, 1024, 12288}, {64 << 10, 780, 780}, {16 << 10, 195, 195}, {512, 16, 16},
	} {
		s := &Service{d: Deps{MaxPayload: tc.payload}}
		if part, chunk := s.chunkSize(); part != tc.part || chunk != tc.chunk {
			t.Errorf("payload %d: part %d, chunk %d; want %d, %d", tc.payload, part, chunk, tc.part, tc.chunk)
		}
	}
}
