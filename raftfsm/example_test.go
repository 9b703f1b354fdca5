package raftfsm_test

import (
	"fmt"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/ringkv/ringkv/raftfsm"
)

func Example() {
	db, err := pebble.Open("node", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		panic(err)
	}
	defer db.Close()

	cfg := raftfsm.DefaultConfig()
	cfg.Partition = 7
	cfg.DB = db
	fsm, err := raftfsm.New(cfg)
	if err != nil {
		panic(err)
	}
	defer fsm.Close()

	// A leader coalesces two client writes into one Raft entry.
	entry := raftfsm.EncodeBatch(nil, []raftfsm.Command{
		{Kind: raftfsm.KindPut, Key: []byte("greeting"), Value: []byte("hello"), ClientID: 1, Seq: 1},
		{Kind: raftfsm.KindCAS, Key: []byte("greeting"), Value: []byte("hello, world"),
			Expect: raftfsm.ExpectValue, ExpectedValue: []byte("hello"), ClientID: 1, Seq: 2},
	})
	for _, r := range fsm.Apply(5, entry) {
		fmt.Println(r.Status, r.Version)
	}

	// The client retries its CAS at a later index: it is not applied twice.
	retry := raftfsm.EncodeBatch(nil, []raftfsm.Command{{Kind: raftfsm.KindCAS, Key: []byte("greeting"),
		Value: []byte("hello, world"), Expect: raftfsm.ExpectValue, ExpectedValue: []byte("hello"), ClientID: 1, Seq: 2}})
	r := fsm.Apply(6, retry)[0]
	fmt.Println(r.Status, r.Version, "applied", fsm.AppliedIndex())

	value, version, _ := fsm.Get([]byte("greeting"))
	fmt.Printf("%s @%d\n", value, version)
	// Output:
	// ok 5
	// ok 5
	// ok 5 applied 6
	// hello, world @5
}
