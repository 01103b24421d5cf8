package data_test

import (
	"fmt"

	"github.com/lathe-ml/lathe/data"
)

// The language-identification set from the installed fortune packages:
// 64-byte windows labelled by language, whole cookies held out for test.
func ExampleLoadLangID() {
	train, test, counts, err := data.LoadLangID(data.LangIDOptions{Seed: 1})
	if err != nil {
		fmt.Println(err) // e.g. a package not installed, naming it
		return
	}
	for _, c := range counts {
		fmt.Printf("%s: %d training and %d test windows\n", c.Class, c.Train, c.Test)
	}
	fmt.Println(train.Cols, train.Classes, test.Len() > 0)
}
