from rewind.runner import main

main()
