package nemesis

import "math/rand/v2"

// Link is a directed link: To drops what comes From.
type Link struct{ To, From int }

// both returns the links a-b in both directions.
func both(a, b int) []Link { return []Link{{a, b}, {b, a}} }

// halves splits a random permutation of n nodes into a smaller and a larger
// half and cuts every link between them.
func halves(rng *rand.Rand, n int) ([]Link, [][]int) {
	p := rng.Perm(n)
	a, b := p[:n/2], p[n/2:]
	return cutGroups(a, b), [][]int{a, b}
}

// isolate cuts node x off from every other node.
func isolate(x, n int) []Link {
	var out []Link
	for i := range n {
		if i != x {
			out = append(out, both(x, i)...)
		}
	}
	return out
}

func cutGroups(a, b []int) []Link {
	var out []Link
	for _, x := range a {
		for _, y := range b {
			out = append(out, both(x, y)...)
		}
	}
	return out
}

// ring arranges n nodes in a random ring where each keeps its links to the
// nodes within distance d = ceil(floor(n/2)/2), so each sees a majority
// (itself and 2d others) and neighbours see different majorities. Three nodes
// would stay fully connected, so there one random link is cut instead.
func ring(rng *rand.Rand, n int) []Link {
	p := rng.Perm(n)
	if n <= 3 {
		if n < 2 {
			return nil
		}
		return both(p[0], p[1])
	}
	d := (n/2 + 1) / 2
	var out []Link
	for i := range n {
		for j := i + 1; j < n; j++ {
			dist := min(j-i, n-(j-i))
			if dist > d {
				out = append(out, both(p[i], p[j])...)
			}
		}
	}
	return out
}

// bridge picks one bridge node and splits the rest into two sides that do
// not see each other; the bridge sees both.
func bridge(rng *rand.Rand, n int) ([]Link, int) {
	p := rng.Perm(n)
	b, rest := p[0], p[1:]
	return cutGroups(rest[:len(rest)/2], rest[len(rest)/2:]), b
}

// oneWay makes x deaf (x drops everything from the others) or mute (the
// others drop everything from x).
func oneWay(x, n int, deaf bool) []Link {
	var out []Link
	for i := range n {
		if i == x {
			continue
		}
		if deaf {
			out = append(out, Link{To: x, From: i})
		} else {
			out = append(out, Link{To: i, From: x})
		}
	}
	return out
}

// everyLink lists every directed link.
func everyLink(n int) []Link {
	var out []Link
	for i := range n {
		for j := range n {
			if i != j {
				out = append(out, Link{To: i, From: j})
			}
		}
	}
	return out
}

// minority picks floor((n-1)/2) random nodes.
func minority(rng *rand.Rand, n int) []int {
	return rng.Perm(n)[:(n-1)/2]
}
