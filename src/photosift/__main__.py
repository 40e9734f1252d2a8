from photosift.cli import main

main()
