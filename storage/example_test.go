package storage_test

import (
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/ringkv/ringkv/storage"
)

func Example() {
	cfg := storage.TestConfig() // DefaultConfig() with Dir set in production
	st, err := storage.Open(cfg)
	if err != nil {
		panic(err)
	}
	defer st.Close()

	// Partition 7's Raft log and stable store: hand it to raft.NewRaft as both.
	logs := st.Log(7)
	if err := logs.StoreLogs([]*raft.Log{
		{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("put a=1")},
		{Index: 2, Term: 1, Type: raft.LogCommand, Data: []byte("put b=2")},
	}); err != nil {
		panic(err)
	}
	if err := logs.SetUint64([]byte("CurrentTerm"), 1); err != nil {
		panic(err)
	}

	var e raft.Log
	if err := logs.GetLog(2, &e); err != nil {
		panic(err)
	}
	last, _ := logs.LastIndex()
	_, err = logs.Get([]byte("LastVoteCand"))
	pids, _ := st.Partitions()
	fmt.Printf("entry 2: %s; last index %d; missing key: %v; partitions %v\n", e.Data, last, err, pids)
	// Output: entry 2: put b=2; last index 2; missing key: not found; partitions [7]
}
