package linkage

import "sync"

// cacheEntries is how many (purpose, epoch, key) sets of pseudonyms a node
// keeps in memory; the one used longest ago goes first.
const cacheEntries = 8

// cacheKey names one set of pseudonyms.
type cacheKey struct{ purpose, epoch, keyID string }

// pseudonymCache keeps, in memory only, the pseudonyms obtained since the
// node started, by resident id, so that a joined query after another, or
// a student added since, costs the evaluator (and its limits) only the
// people not yet evaluated. Nothing of it is written to disk: a restart
// asks again.
type pseudonymCache struct {
	mu   sync.Mutex
	sets map[cacheKey]*cacheSet
	tick uint64
}

type cacheSet struct {
	byID map[string][32]byte
	used uint64
}

// known puts in out, by student, the pseudonyms the set for k holds of
// people, and returns the people it holds none of. It looks each person up
// under the lock rather than copying the set.
func (c *pseudonymCache) known(k cacheKey, people []person, out map[string][32]byte) []person {
	c.mu.Lock()
	defer c.mu.Unlock()
	set := c.sets[k]
	if set == nil {
		return people
	}
	c.tick++
	set.used = c.tick
	todo := people[:0:0]
	for _, p := range people {
		if ps, ok := set.byID[p.id]; ok {
			out[p.student] = ps
		} else {
			todo = append(todo, p)
		}
	}
	return todo
}

// add puts fresh pseudonyms in the set for k, dropping the set used
// longest ago when there are too many.
func (c *pseudonymCache) add(k cacheKey, fresh map[string][32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sets == nil {
		c.sets = map[cacheKey]*cacheSet{}
	}
	c.tick++
	set := c.sets[k]
	if set == nil {
		if len(c.sets) >= cacheEntries {
			var oldest cacheKey
			var at uint64 = ^uint64(0)
			for key, s := range c.sets {
				if s.used < at {
					oldest, at = key, s.used
				}
			}
			delete(c.sets, oldest)
		}
		set = &cacheSet{byID: make(map[string][32]byte, len(fresh))}
		c.sets[k] = set
	}
	set.used = c.tick
	for id, p := range fresh {
		set.byID[id] = p
	}
}
