// etcd, built from go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes
// itself resolves (see go.mod), as etcd's own main.go does.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
