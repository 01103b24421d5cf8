// Command worker joins a lathe job's cluster through NATS and trains its
// share of every step:
//
//	worker --nats nats://host:4222 [--token-file F | --user U --password-file F | --creds F | --nkey F]
//	       [--tls-ca F] [--tls-cert F --tls-key F] [--job JOB] [--name NAME] [--data-dir DIR]
//
// Without --job it joins the only job running on that NATS, waiting for
// one if none runs yet. The recipe, the teachers and any checkpoint to
// resume from come from the coordinator; the dataset is read from
// --data-dir or where it is installed.
package main

import (
	"os"

	"github.com/lathe-ml/lathe/internal/workercli"
)

func main() { os.Exit(workercli.Main(os.Args[1:], os.Stderr)) }
