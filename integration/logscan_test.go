package integration

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"strings"
)

// knownBug is a reported bug in another package, recognised by a signature
// in a node's log.
type knownBug struct{ signature, bug string }

// knownRaces are data races of reported bugs (see TestBugGossipLeaveRace).
// A race report holding one of these signatures is logged, not failed,
// unless the test clears cluster.tolerateKnownBugs, so that every other test
// stays a detector of new races.
var knownRaces = []knownBug{}

// knownHangs are SIGTERM hangs of reported bugs, recognised in the
// goroutine dump (see TestBugStopHangsAfterElection); tolerated likewise.
var knownHangs = []knownBug{}

// logProblems returns what is wrong in a node log: a panic, a fatal
// runtime error, a data race (known ones excepted and counted when tolerate
// is true).
func logProblems(b []byte, tolerate bool) (out []string, tolerated int) {
	// "panic serving" is a handler panic that net/http recovered.
	for _, bad := range []string{"panic:", "panic serving", "fatal error:", "runtime error:"} {
		if i := bytes.Index(b, []byte(bad)); i >= 0 {
			out = append(out, fmt.Sprintf("contains %q:\n%s", bad, excerpt(b, i, 60)))
		}
	}
	const raceStart, raceEnd = "WARNING: DATA RACE", "\n=================="
	rest := b
	for range bytes.Count(b, []byte(raceStart)) {
		i := bytes.Index(rest, []byte(raceStart))
		if i < 0 {
			break
		}
		report := rest[i:]
		if j := bytes.Index(report, []byte(raceEnd)); j >= 0 {
			report = report[:j]
		}
		rest = rest[i+len(raceStart):]
		known := ""
		for _, k := range knownRaces {
			if bytes.Contains(report, []byte(k.signature)) {
				known = k.bug
			}
		}
		if tolerate && known != "" {
			tolerated++
			continue
		}
		out = append(out, fmt.Sprintf("DATA RACE (%s):\n%s", cmp.Or(known, "new"), report))
	}
	return out, tolerated
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// excerpt returns up to n lines of b starting at the line holding offset i.
func excerpt(b []byte, i, n int) string {
	start := bytes.LastIndexByte(b[:i], '\n') + 1
	sc := bufio.NewScanner(bytes.NewReader(b[start:]))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var out []string
	for len(out) < n && sc.Scan() {
		out = append(out, sc.Text())
	}
	return strings.Join(out, "\n")
}
