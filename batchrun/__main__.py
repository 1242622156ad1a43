from batchrun.entry import main

main()
