from imlscan.cli import main

main()
