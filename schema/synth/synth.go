// Package synth makes synthetic, realistic-looking education records for
// the demo, the benchmark and tests: Chinese names, resident ID numbers with
// valid check characters, students with course grades. Every person is
// invented.
package synth

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"time"
)

// Synthetic, realistic-looking records. Every person here is invented:
// names are drawn from common surnames and given-name characters, resident
// ID numbers are built with valid area codes, dates and check characters.

var (
	surnames   = []rune("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
	givenChars = []rune("伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英华玉萍红娥玲芬芳燕彩春菊兰凤洁梅琳素云莲真环雪荣爱妹霞香月莺媛艳瑞凡佳嘉琼勤珍贞莉桂娣叶璧璐娅琦晶妍茜秋珊莎锦黛青倩婷姣婉娴瑾颖露瑶怡婵雁蓓纨仪荷丹蓉眉君琴蕊薇菁梦岚苑婕馨瑗琰韵融园艺咏卿聪澜纯毓悦昭冰爽琬茗羽希宁欣飘育滢馥筠柔竹霭凝晓欢霄枫芸菲寒伊亚宜可姬舒影荔枝思丽浩宇轩子涵博文睿泽天佑")
	areaCodes  = []string{"110101", "110108", "310104", "310115", "440106", "440305", "510107", "330106", "420111", "320102", "370102", "610113", "500103", "120104"}
	ethnicity  = []string{"汉族", "汉族", "汉族", "汉族", "汉族", "汉族", "汉族", "汉族", "回族", "满族", "壮族", "蒙古族", "土家族", "苗族"}
	political  = []string{"共青团员", "共青团员", "群众", "中共党员", "中共预备党员"}
	courses    = []struct {
		code, name string
		credits    float64
	}{
		{"MATH101", "高等数学", 5}, {"CS102", "程序设计基础", 4}, {"PHY101", "大学物理", 4},
		{"ENG101", "大学英语", 3}, {"CS201", "数据结构", 4}, {"POL101", "思想道德与法治", 3},
		{"MATH201", "线性代数", 3}, {"PE101", "体育", 1}, {"PSY101", "心理健康教育", 2},
	}
)

// ResidentID builds an 18-character resident ID number with a valid check
// character (ISO 7064 MOD 11-2); the sequence's parity encodes gender.
func ResidentID(r *rand.Rand, birth time.Time, female bool) string {
	seq := r.IntN(500) * 2
	if !female {
		seq++
	}
	body := fmt.Sprintf("%s%s%03d", areaCodes[r.IntN(len(areaCodes))], birth.Format("20060102"), seq)
	weights := []int{7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2}
	sum := 0
	for i, w := range weights {
		sum += int(body[i]-'0') * w
	}
	return body + string("10X98765432"[sum%11])
}

// ChineseName draws a realistic Chinese name: a common surname and one or
// two given-name characters.
func ChineseName(r *rand.Rand) string {
	n := string(surnames[r.IntN(len(surnames))]) + string(givenChars[r.IntN(len(givenChars))])
	if r.IntN(3) > 0 {
		n += string(givenChars[r.IntN(len(givenChars))])
	}
	return n
}

// Synth writes synthetic records of one university as NDJSON: students
// (about one in twenty under 14, as in a juvenile class) and their course
// grades. It returns how many records it wrote.
type Synth struct {
	Prefix   string // student id prefix, e.g. "2023001"
	Students int
	Seed     uint64
	Now      time.Time
}

// Write writes the records and returns how many it wrote.
func (s Synth) Write(w io.Writer) (int, error) {
	r := rand.New(rand.NewPCG(s.Seed, s.Seed^0x9e3779b97f4a7c15))
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	n := 0
	for i := 0; i < s.Students; i++ {
		id := fmt.Sprintf("%s%04d", s.Prefix, i+1)
		female := r.IntN(2) == 0
		age := 18 + r.IntN(5)
		if i%20 == 7 {
			age = 12 + r.IntN(2) // juvenile class: under 14
		}
		birth := s.Now.AddDate(-age, 0, -r.IntN(360)-1)
		gender := "男"
		if female {
			gender = "女"
		}
		st := map[string]any{
			"type":             "student",
			"student_id":       id,
			"name":             ChineseName(r),
			"gender":           gender,
			"birth_date":       birth.Format("2006-01-02"),
			"id_type":          "resident_id",
			"id_number":        ResidentID(r, birth, female),
			"ethnicity":        ethnicity[r.IntN(len(ethnicity))],
			"nationality":      "中国",
			"political_status": political[r.IntN(len(political))],
			"phone":            fmt.Sprintf("1%d%09d", 3+r.IntN(7), r.IntN(1_000_000_000)),
			"email":            fmt.Sprintf("%s@stu.example.edu.cn", id),
		}
		if r.IntN(8) == 0 {
			st["health_status"] = "良好"
		}
		if r.IntN(10) == 0 {
			st["notes"] = fmt.Sprintf("家长联系电话 1%d%09d", 3+r.IntN(7), r.IntN(1_000_000_000))
		}
		if err := enc.Encode(st); err != nil {
			return n, err
		}
		n++
		for _, c := range r.Perm(len(courses))[:3] {
			score := 55 + r.IntN(46)
			g := map[string]any{
				"type":        "course_grade",
				"student_id":  id,
				"course_code": courses[c].code,
				"course_name": courses[c].name,
				"credits":     courses[c].credits,
				"term":        "2025-2026-1",
				"score":       score,
				"gpa":         gpa(score),
			}
			if err := enc.Encode(g); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

func gpa(score int) float64 {
	switch {
	case score >= 90:
		return 4.0
	case score >= 85:
		return 3.7
	case score >= 80:
		return 3.3
	case score >= 75:
		return 3.0
	case score >= 70:
		return 2.7
	case score >= 65:
		return 2.3
	case score >= 60:
		return 2.0
	}
	return 0
}

// StudentFields are the fields of the records Students makes.
var StudentFields = []string{"student_id", "name", "name_pinyin", "gender", "birth_date", "id_type", "id_number",
	"ethnicity", "nationality", "native_place", "political_status", "hukou_type", "address", "postal_code",
	"phone", "email", "dormitory", "campus_card_no"}

var pinyin = []string{"Wang", "Li", "Zhang", "Liu", "Chen", "Yang", "Huang", "Zhao", "Wu", "Zhou", "Xu", "Sun"}

// Students returns n realistic student records of about 600 bytes as
// NDJSON (adults only, no free text: every one is at L3 or below) and their
// total size.
func Students(n int, seed uint64) ([]byte, int) {
	r := rand.New(rand.NewPCG(seed, seed*31+7))
	now := time.Now()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	for i := 0; i < n; i++ {
		female := r.IntN(2) == 0
		birth := now.AddDate(-18-r.IntN(6), 0, -r.IntN(360)-1)
		gender := "男"
		if female {
			gender = "女"
		}
		enc.Encode(map[string]any{
			"type":             "student",
			"student_id":       fmt.Sprintf("2024%07d", i+1),
			"name":             ChineseName(r),
			"name_pinyin":      pinyin[r.IntN(len(pinyin))] + " " + pinyin[r.IntN(len(pinyin))] + "yi",
			"gender":           gender,
			"birth_date":       birth.Format("2006-01-02"),
			"id_type":          "resident_id",
			"id_number":        ResidentID(r, birth, female),
			"ethnicity":        "汉族",
			"nationality":      "中国",
			"native_place":     "四川省成都市",
			"political_status": "共青团员",
			"hukou_type":       "城镇",
			"address":          fmt.Sprintf("四川省成都市武侯区人民南路%d段%d号%d栋%d单元", 1+r.IntN(4), 1+r.IntN(200), 1+r.IntN(30), 1+r.IntN(6)),
			"postal_code":      "610041",
			"phone":            fmt.Sprintf("1%d%09d", 3+r.IntN(7), r.IntN(1_000_000_000)),
			"email":            fmt.Sprintf("s%07d@stu.example.edu.cn", i+1),
			"dormitory":        fmt.Sprintf("学生公寓%d号楼%d室", 1+r.IntN(20), 100+r.IntN(600)),
			"campus_card_no":   fmt.Sprintf("%010d", r.IntN(1_000_000_000)),
		})
	}
	return buf.Bytes(), buf.Len()
}

// Cohort makes the records of one senior high school's graduating cohort
// and of the universities some of its students went on to: the same
// persons, with the same resident ID numbers, under each institution's own
// student ids, so that a joined aggregate can link them (node/aggregate
// AGGREGATES.md §7). Progression depends on household registration (more
// often for 城镇 than for 农村), and about four in five entrants have an
// employment record with a starting salary.
type Cohort struct {
	Seed     uint64
	Students int
	Now      time.Time
	// School is the school's student id prefix; Universities the
	// universities' prefixes.
	School       string
	Universities []string
}

// CohortPerson is the truth about one person of a cohort, for checking
// joined answers.
type CohortPerson struct {
	Hukou, Gender string
	// University is the index of the university the person entered, -1
	// for none.
	University int
	// Employed: an employment record with Salary and Region exists.
	Employed bool
	Salary   int64
	Region   string
}

// CohortRegions are the employer regions of a cohort's employment records.
var CohortRegions = []string{"440300", "440100", "310100"}

// Write writes the school's records to school and each university's to
// unis (one writer per prefix), and returns the cohort's persons in order.
func (c Cohort) Write(school io.Writer, unis []io.Writer) ([]CohortPerson, error) {
	if len(unis) != len(c.Universities) {
		return nil, fmt.Errorf("cohort: %d writers for %d universities", len(unis), len(c.Universities))
	}
	r := rand.New(rand.NewPCG(c.Seed, c.Seed^0x5bd1e995))
	enc := json.NewEncoder(school)
	enc.SetEscapeHTML(false)
	uenc := make([]*json.Encoder, len(unis))
	for i, w := range unis {
		uenc[i] = json.NewEncoder(w)
		uenc[i].SetEscapeHTML(false)
	}
	year := c.Now.Year()
	var out []CohortPerson
	for i := 0; i < c.Students; i++ {
		female := r.IntN(2) == 0
		p := CohortPerson{Gender: "男", Hukou: "城镇", University: -1}
		if female {
			p.Gender = "女"
		}
		rural := r.IntN(5) < 2
		if rural {
			p.Hukou = "农村"
		}
		birth := c.Now.AddDate(-18, 0, -r.IntN(360)-1)
		rid := ResidentID(r, birth, female)
		name := ChineseName(r)
		st := map[string]any{"type": "student", "student_id": fmt.Sprintf("%s%05d", c.School, i+1), "name": name,
			"gender": p.Gender, "birth_date": birth.Format("2006-01-02"), "id_type": "resident_id", "id_number": rid,
			"hukou_type": p.Hukou, "ethnicity": ethnicity[r.IntN(len(ethnicity))], "nationality": "中国"}
		if err := enc.Encode(st); err != nil {
			return nil, err
		}
		progress := 70
		if rural {
			progress = 50
		}
		if len(unis) > 0 && r.IntN(100) < progress {
			p.University = r.IntN(len(unis))
			sid := fmt.Sprintf("%s%05d", c.Universities[p.University], i+1)
			e := uenc[p.University]
			recs := []map[string]any{
				{"type": "student", "student_id": sid, "name": name, "gender": p.Gender, "birth_date": birth.Format("2006-01-02"),
					"id_type": "resident_id", "id_number": rid, "hukou_type": p.Hukou, "nationality": "中国"},
				{"type": "enrollment", "student_id": sid, "education_level": "本科", "grade_year": strconv.Itoa(year),
					"admission_date": fmt.Sprintf("%d-09-01", year), "status": "在读"},
			}
			if r.IntN(5) < 4 {
				p.Employed, p.Salary, p.Region = true, int64(4000+500*r.IntN(17)), CohortRegions[r.IntN(len(CohortRegions))]
				recs = append(recs, map[string]any{"type": "employment", "student_id": sid, "employer_region": p.Region,
					"starting_salary_cny": p.Salary, "destination_type": "签就业协议"})
			}
			for _, rec := range recs {
				if err := e.Encode(rec); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, p)
	}
	return out, nil
}
