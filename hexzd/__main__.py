from hexzd.cli import main

main()
